//! Properties (`proxy_get_property`): the common attributes both hosts expose, encoded the way
//! each host encodes them.
//!
//! Envoy returns typed binary values (ENVOY-SRC `Context::getProperty`, attribute docs): strings
//! as raw bytes, integers as 8-byte little-endian int64, booleans as one byte, and maps
//! (`request.headers`) serialized like header maps. Kong returns every value as a string and
//! exposes nginx variables under `ngx.*` (Kong/ngx_wasm_module docs/PROXY_WASM.md, properties).
//! Properties the guest set itself (`proxy_set_property`) read back verbatim first.

use crate::abi::{decode_property_path, encode_pairs};
use crate::profile::Profile;
use crate::state::{HostState, StreamState};

enum Value {
    Str(String),
    Int(i64),
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

fn encode(profile: Profile, value: Value) -> Vec<u8> {
    match (profile, value) {
        (_, Value::Str(s)) => s.into_bytes(),
        (Profile::Envoy, Value::Int(i)) => i.to_le_bytes().to_vec(),
        (Profile::Kong, Value::Int(i)) => i.to_string().into_bytes(),
        (_, Value::Map(pairs)) => encode_pairs(&pairs),
    }
}

fn header<'a>(stream: &'a StreamState, name: &str) -> Option<&'a [u8]> {
    stream
        .request
        .headers
        .as_ref()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

fn header_str(stream: &StreamState, name: &str) -> Option<String> {
    header(stream, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Resolves a property path for the effective context.
pub(crate) fn lookup(state: &HostState, raw_path: &[u8]) -> Option<Vec<u8>> {
    let stream = state.effective().and_then(|id| state.streams.get(&id));
    if let Some(v) = stream.and_then(|s| s.properties.get(raw_path)) {
        return Some(v.clone());
    }
    if let Some(v) = state.properties.get(raw_path) {
        return Some(v.clone());
    }
    let path = decode_property_path(raw_path);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let profile = state.profile;
    let root = state.effective_root().and_then(|r| state.roots.get(&r));
    let value = match segments.as_slice() {
        ["plugin_name"] => Value::Str(state.plugin_name.clone()),
        ["plugin_root_id"] => Value::Str(root.map(|r| r.root_id.clone()).unwrap_or_default()),
        ["plugin_vm_id"] => Value::Str(state.vm_id.clone()),
        _ => {
            let stream = stream?;
            stream_property(profile, stream, &segments)?
        }
    };
    Some(encode(profile, value))
}

fn stream_property(profile: Profile, stream: &StreamState, segments: &[&str]) -> Option<Value> {
    let info = &stream.info;
    let path = header_str(stream, ":path").unwrap_or_default();
    Some(match segments {
        ["request", "path"] => Value::Str(path),
        ["request", "url_path"] => Value::Str(path.split('?').next().unwrap_or_default().to_string()),
        ["request", "query"] => Value::Str(path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default()),
        ["request", "host"] => Value::Str(header_str(stream, ":authority").or_else(|| header_str(stream, "host"))?),
        ["request", "scheme"] => Value::Str(header_str(stream, ":scheme").unwrap_or_else(|| "http".into())),
        ["request", "method"] => Value::Str(header_str(stream, ":method")?),
        ["request", "protocol"] => Value::Str(info.protocol.clone()),
        ["request", "id"] => Value::Str(header_str(stream, "x-request-id").unwrap_or_else(|| info.request_id.clone())),
        ["request", "useragent"] => Value::Str(header_str(stream, "user-agent")?),
        ["request", "referer"] => Value::Str(header_str(stream, "referer")?),
        ["request", "headers"] if profile == Profile::Envoy => Value::Map(
            stream
                .request
                .headers
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| !k.starts_with(b":"))
                .collect(),
        ),
        ["request", "headers", name] => Value::Str(header_str(stream, name)?),
        ["request", "size"] => Value::Int(stream.request.forwarded_body.len() as i64 + stream.request.body.len() as i64),
        ["response", "code"] => {
            let status = stream
                .local_response
                .as_ref()
                .map(|r| r.status.to_string())
                .or_else(|| {
                    stream.response.headers.as_ref().and_then(|h| {
                        h.iter()
                            .find(|(k, _)| k == b":status")
                            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    })
                })?;
            Value::Int(status.parse().ok()?)
        }
        ["source", "address"] => Value::Str(format!("{}:{}", info.source_address, info.source_port)),
        ["source", "port"] => Value::Int(info.source_port as i64),
        ["destination", "address"] => Value::Str(format!("{}:{}", info.destination_address, info.destination_port)),
        ["destination", "port"] => Value::Int(info.destination_port as i64),
        // nginx variables, Kong only.
        ["ngx", var] if profile == Profile::Kong => Value::Str(match *var {
            "request_uri" => path,
            "uri" => path.split('?').next().unwrap_or_default().to_string(),
            "args" => path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default(),
            "request_method" => header_str(stream, ":method")?,
            "scheme" => header_str(stream, ":scheme").unwrap_or_else(|| "http".into()),
            "host" => header_str(stream, ":authority")?,
            "remote_addr" => info.source_address.clone(),
            "remote_port" => info.source_port.to_string(),
            "server_addr" => info.destination_address.clone(),
            "server_port" => info.destination_port.to_string(),
            "server_protocol" => info.protocol.clone(),
            "content_length" => header_str(stream, "content-length")?,
            "content_type" => header_str(stream, "content-type")?,
            other => {
                let name = other.strip_prefix("http_")?.replace('_', "-");
                header_str(stream, &name)?
            }
        }),
        _ => return None,
    })
}
