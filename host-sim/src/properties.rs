//! Properties (`proxy_get_property`): the common attributes both hosts expose, with each host's
//! own rules and encoding from its profile ([`HostBehaviour::host_property`],
//! [`HostBehaviour::encode_property`]).
//!
//! The common attributes follow Envoy's attribute docs (`request.*`, `response.*`,
//! `source.*`, `destination.*`, `connection.mtls`, `plugin_name`), which Kong maps to nginx
//! variables (Kong/ngx_wasm_module docs/PROXY_WASM.md, properties; KONG-SRC
//! `ngx_proxy_wasm_properties.c`, table `pw2ngx`). Properties the guest set itself
//! (`proxy_set_property`) read back verbatim first.

use crate::abi::{decode_property_path, LogLevel};
use crate::profile::{HostBehaviour, HostProperty, PropertyFacts, PropertyValue, StreamFacts};
use crate::state::HostState;

/// Resolves a property path for the effective context; a property the host knows but does not
/// implement reads as `None` and leaves the host's log line ([`HostProperty::Unsupported`]).
pub(crate) fn lookup(state: &mut HostState, raw_path: &[u8]) -> Option<Vec<u8>> {
    match resolve(state, raw_path) {
        Ok(value) => value,
        Err((level, line)) => {
            state.push_log(level, line);
            None
        }
    }
}

/// The value of a property path, or the host's log line for one it does not implement.
fn resolve(state: &HostState, raw_path: &[u8]) -> Result<Option<Vec<u8>>, (LogLevel, String)> {
    let stream_id = state.effective();
    let stream = stream_id.and_then(|id| state.streams.get(&id));
    if let Some(v) = stream.and_then(|s| s.properties.get(raw_path)) {
        return Ok(Some(v.clone()));
    }
    if let Some(v) = state.properties.get(raw_path) {
        return Ok(Some(v.clone()));
    }
    let path = decode_property_path(raw_path);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let root_context = state.effective_root();
    let facts = PropertyFacts {
        vm_id: &state.vm_id,
        root_id: root_context
            .and_then(|r| state.roots.get(&r))
            .map(|r| r.root_id.as_str()),
        stream: stream_id.zip(stream).map(|(id, s)| StreamFacts {
            id,
            info: &s.info,
            request_headers: s.request.headers.as_ref(),
            response_headers: s.response.headers.as_ref(),
        }),
    };
    let profile: &dyn HostBehaviour = &*state.profile;
    let value = match profile.host_property(&segments, &facts) {
        HostProperty::Value(value) => Some(value),
        HostProperty::NotFound => None,
        HostProperty::Unsupported(level, line) => return Err((level, line)),
        HostProperty::Common => common_property(state, &facts, &segments),
    };
    Ok(value.map(|value| profile.encode_property(value)))
}

/// The attributes every host exposes the same way (Envoy's attribute docs; Kong's `pw2ngx`).
fn common_property(state: &HostState, facts: &PropertyFacts<'_>, segments: &[&str]) -> Option<PropertyValue> {
    use PropertyValue::{Bool, Int, Str};
    if segments == ["plugin_name"] {
        return Some(Str(state.plugin_name.clone()));
    }
    let stream = state.streams.get(&facts.stream?.id)?;
    let info = &stream.info;
    let header = |name: &str| facts.request_header(name);
    let path = header(":path").unwrap_or_default();
    Some(match segments {
        ["request", "path"] => Str(path),
        ["request", "url_path"] => Str(path.split('?').next().unwrap_or_default().to_string()),
        ["request", "query"] => Str(path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default()),
        ["request", "host"] => Str(header(":authority").or_else(|| header("host"))?),
        ["request", "scheme"] => Str(header(":scheme").unwrap_or_else(|| "http".into())),
        ["request", "method"] => Str(header(":method")?),
        ["request", "protocol"] => Str(info.protocol.to_string()),
        ["request", "id"] => Str(header("x-request-id").unwrap_or_else(|| info.request_id.to_string())),
        ["request", "useragent"] => Str(header("user-agent")?),
        ["request", "referer"] => Str(header("referer")?),
        ["request", "headers", name] => Str(header(name)?),
        ["response", "headers", name] => Str(facts.response_header(name)?),
        // No TLS is modelled: never mutual TLS.
        ["connection", "mtls"] => Bool(false),
        ["request", "size"] => Int(stream.request.forwarded_body.len() as i64 + stream.request.body.len() as i64),
        ["response", "code"] => {
            let status = stream
                .local_response
                .as_ref()
                .map(|r| r.status.to_string())
                .or_else(|| facts.response_header(":status"))?;
            Int(status.parse().ok()?)
        }
        // "ip:port" (Envoy attribute docs).
        ["source", "address"] => Str(format!("{}:{}", info.source_address, info.source_port)),
        ["source", "port"] => Int(info.source_port as i64),
        ["destination", "address"] => Str(format!("{}:{}", info.destination_address, info.destination_port)),
        ["destination", "port"] => Int(info.destination_port as i64),
        _ => return None,
    })
}
