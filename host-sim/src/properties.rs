//! Properties (`proxy_get_property`): the common attributes both hosts expose, encoded the way
//! each host encodes them.
//!
//! Envoy returns typed binary values (ENVOY-SRC `Context::getProperty`, attribute docs): strings
//! as raw bytes, integers as 8-byte little-endian int64, booleans as one byte, and maps
//! (`request.headers`) serialized like header maps. Kong returns every value as a string, maps
//! each attribute to an nginx variable and exposes nginx variables under `ngx.*`
//! (Kong/ngx_wasm_module docs/PROXY_WASM.md, properties; KONG-SRC
//! `ngx_proxy_wasm_properties.c`, table `pw2ngx`).
//! Properties the guest set itself (`proxy_set_property`) read back verbatim first.

use crate::abi::{decode_property_path, encode_pairs, Pairs};
use crate::profile::Profile;
use crate::state::{HostState, StreamState};

enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

fn encode(profile: Profile, value: Value) -> Vec<u8> {
    match (profile, value) {
        (_, Value::Str(s)) => s.into_bytes(),
        (Profile::Envoy, Value::Int(i)) => i.to_le_bytes().to_vec(),
        (Profile::Kong, Value::Int(i)) => i.to_string().into_bytes(),
        (Profile::Envoy, Value::Bool(b)) => vec![b as u8],
        (Profile::Kong, Value::Bool(b)) => b.to_string().into_bytes(),
        (_, Value::Map(pairs)) => encode_pairs(&pairs),
    }
}

fn find<'a>(headers: &'a Option<Pairs>, name: &str) -> Option<&'a [u8]> {
    headers
        .as_ref()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

fn header_str(stream: &StreamState, name: &str) -> Option<String> {
    find(&stream.request.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

fn response_header_str(stream: &StreamState, name: &str) -> Option<String> {
    find(&stream.response.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A header map as Envoy's map-valued attributes carry it: without pseudo-headers.
fn header_map(headers: &Option<Pairs>) -> Value {
    Value::Map(
        headers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(b":"))
            .collect(),
    )
}

/// Resolves a property path for the effective context.
pub(crate) fn lookup(state: &HostState, raw_path: &[u8]) -> Option<Vec<u8>> {
    let stream_id = state.effective();
    let stream = stream_id.and_then(|id| state.streams.get(&id));
    if let Some(v) = stream.and_then(|s| s.properties.get(raw_path)) {
        return Some(v.clone());
    }
    if let Some(v) = state.properties.get(raw_path) {
        return Some(v.clone());
    }
    let path = decode_property_path(raw_path);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let profile = state.profile;
    let root_context = state.effective_root();
    let root = root_context.and_then(|r| state.roots.get(&r));
    let value = match (profile, segments.as_slice()) {
        (_, ["plugin_name"]) => Value::Str(state.plugin_name.clone()),
        (Profile::Envoy, ["plugin_root_id"]) => Value::Str(root.map(|r| r.root_id.clone()).unwrap_or_default()),
        // KONG-SRC properties: `get_filter_root_id` prints the root context's number; Kong has
        // no root id setting. `plugin_vm_id` is NYI there.
        (Profile::Kong, ["plugin_root_id"]) => Value::Str(root_context?.to_string()),
        (Profile::Envoy, ["plugin_vm_id"]) => Value::Str(state.vm_id.clone()),
        _ => {
            let stream = stream?;
            stream_property(profile, stream, stream_id.unwrap_or_default(), &segments)?
        }
    };
    Some(encode(profile, value))
}

fn stream_property(profile: Profile, stream: &StreamState, stream_id: u32, segments: &[&str]) -> Option<Value> {
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
        ["request", "headers"] if profile == Profile::Envoy => header_map(&stream.request.headers),
        ["request", "headers", name] => Value::Str(header_str(stream, name)?),
        ["response", "headers"] if profile == Profile::Envoy => header_map(&stream.response.headers),
        ["response", "headers", name] => Value::Str(response_header_str(stream, name)?),
        // No TLS is modelled: never mutual TLS. Kong prints the boolean (KONG-SRC
        // `get_connection_mtls`).
        ["connection", "mtls"] => Value::Bool(false),
        ["request", "size"] => {
            Value::Int(stream.request.forwarded_body.len() as i64 + stream.request.body.len() as i64)
        }
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
        // Envoy: "ip:port" (attribute docs). Kong maps `source.address` to `$remote_addr`, the
        // address alone, and `destination.*` to `$proxy_protocol_addr`/`_port`, which are unset
        // without the PROXY protocol (KONG-SRC properties `pw2ngx`).
        ["source", "address"] if profile == Profile::Kong => Value::Str(info.source_address.clone()),
        ["source", "address"] => Value::Str(format!("{}:{}", info.source_address, info.source_port)),
        ["source", "port"] => Value::Int(info.source_port as i64),
        ["destination", ..] if profile == Profile::Kong => return None,
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
            // nginx's `$request_id`: "unique request identifier generated from 16 random bytes,
            // in hexadecimal" (nginx.org/en/docs/http/ngx_http_core_module.html#var_request_id),
            // whatever the request's headers say. The stream's id when it has one, else 32 hex
            // digits of its context id.
            "request_id" if info.request_id.is_empty() => format!("{stream_id:032x}"),
            "request_id" => info.request_id.clone(),
            other => {
                let name = other.strip_prefix("http_")?.replace('_', "-");
                header_str(stream, &name)?
            }
        }),
        _ => return None,
    })
}
