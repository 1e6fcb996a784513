//! Which topics a request targets and which record key it carries (Kong 3.10
//! `topics_query_arg` / `allowed_topics`, 3.11 `key_query_arg`).
//!
//! - Without `topics_query_arg`, or when the request does not give that argument a non-empty
//!   value, the target is the configured `topic`.
//! - Otherwise the argument's value is a comma-separated list of topics
//!   (`/kafka?topic-list=my-topic,topic1`); items are trimmed, empty items dropped, repeats sent
//!   once. When the argument appears several times, all its values are used (so that no
//!   requested topic is silently skipped).
//! - Every target must be `topic` (always allowed) or listed in `allowed_topics`; otherwise the
//!   whole request is refused and nothing is sent (Kong's "one or more target topics are not in
//!   the allowed topics list").
//! - The key is the first value of `key_query_arg` (as `kong.request.get_query_arg` returns it),
//!   percent-decoded; a value-less or empty argument means no key. Without one, the key comes
//!   from `key_header` or `key_body_field` ([`crate::template`]).

use crate::args::{self, Arg};
use crate::config::Config;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// The topics, in request order, without repeats; never empty.
    pub topics: Vec<String>,
    /// The record key.
    pub key: Option<Vec<u8>>,
}

/// The request named topics outside the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    /// The refused topics, in request order.
    pub topics: Vec<String>,
}

/// Works out the targets of a request from its query string.
pub fn select(cfg: &Config, query: &[u8]) -> Result<Targets, NotAllowed> {
    let needs_args = cfg.topics_query_arg.is_some() || cfg.key_query_arg.is_some();
    let parsed: Vec<Arg<'_>> = if needs_args {
        args::parse(query, args::MAX_ARGS)
    } else {
        Vec::new()
    };

    let mut topics: Vec<String> = Vec::new();
    if let Some(name) = &cfg.topics_query_arg {
        for arg in parsed.iter().filter(|a| *a.key == *name.as_bytes()) {
            let Some(value) = &arg.value else { continue };
            for item in String::from_utf8_lossy(value).split(',') {
                let item = item.trim();
                if !item.is_empty() && !topics.iter().any(|t| t == item) {
                    topics.push(item.to_string());
                }
            }
        }
    }
    if topics.is_empty() {
        topics.push(cfg.topic.clone());
    }
    let refused: Vec<String> = topics
        .iter()
        .filter(|t| **t != cfg.topic && !cfg.allowed_topics.iter().any(|a| a == *t))
        .cloned()
        .collect();
    if !refused.is_empty() {
        return Err(NotAllowed { topics: refused });
    }

    let key = cfg.key_query_arg.as_ref().and_then(|name| {
        let arg = parsed.iter().find(|a| *a.key == *name.as_bytes())?;
        let value = arg.value.as_ref()?;
        (!value.is_empty()).then(|| value.to_vec())
    });
    Ok(Targets { topics, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(r#"{{"topic":"my-topic","rest_proxy":{{"upstream":"u"}}{extra}}}"#);
        crate::config::parse(text.as_bytes()).unwrap()
    }

    fn topics(c: &Config, query: &str) -> Result<Vec<String>, Vec<String>> {
        select(c, query.as_bytes()).map(|t| t.topics).map_err(|e| e.topics)
    }

    #[test]
    fn kong_documented_examples() {
        let c = cfg(r#","topics_query_arg":"topic-list","allowed_topics":["my-topic","topic1","topic2"]"#);
        assert_eq!(
            topics(&c, "topic-list=my-topic,topic1"),
            Ok(vec!["my-topic".into(), "topic1".into()])
        );
        assert_eq!(
            topics(&c, "topic-list=my-topic,topic1,topic3"),
            Err(vec!["topic3".into()])
        );
        assert_eq!(topics(&c, ""), Ok(vec!["my-topic".into()]));
    }

    #[test]
    fn default_topic_is_always_allowed() {
        let c = cfg(r#","topics_query_arg":"t""#);
        assert_eq!(topics(&c, "t=my-topic"), Ok(vec!["my-topic".into()]));
        assert_eq!(topics(&c, "t=other"), Err(vec!["other".into()]));
    }

    #[test]
    fn list_parsing() {
        let c = cfg(r#","topics_query_arg":"t","allowed_topics":["a","b","c d"]"#);
        type Expected = Result<Vec<&'static str>, Vec<&'static str>>;
        let cases: [(&str, Expected); 9] = [
            ("t=a,b", Ok(vec!["a", "b"])),
            ("t=a%2Cb", Ok(vec!["a", "b"])),
            ("t=+a+,,b,", Ok(vec!["a", "b"])),
            ("t=a,a,b,a", Ok(vec!["a", "b"])),
            ("t=a&t=b", Ok(vec!["a", "b"])),
            ("t=c+d", Ok(vec!["c d"])),
            ("t", Ok(vec!["my-topic"])),
            ("t=&x=y", Ok(vec!["my-topic"])),
            ("t=a,x,y", Err(vec!["x", "y"])),
        ];
        for (query, want) in cases {
            let want = want
                .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
                .map_err(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(topics(&c, query), want, "query {query}");
        }
    }

    #[test]
    fn query_ignored_without_topics_query_arg() {
        let c = cfg("");
        assert_eq!(topics(&c, "topic-list=x"), Ok(vec!["my-topic".into()]));
    }

    #[test]
    fn keys() {
        let c = cfg(r#","key_query_arg":"key""#);
        let key = |q: &str| select(&c, q.as_bytes()).unwrap().key;
        assert_eq!(key("key=user-1"), Some(b"user-1".to_vec()));
        assert_eq!(key("key=a%20b&key=second"), Some(b"a b".to_vec()));
        assert_eq!(key("key=%FF"), Some(vec![0xff]));
        assert_eq!(key("key"), None);
        assert_eq!(key("key="), None);
        assert_eq!(key("other=1"), None);
        assert_eq!(select(&cfg(""), b"key=x").unwrap().key, None);
    }
}
