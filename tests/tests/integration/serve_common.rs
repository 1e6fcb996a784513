//! Counterparts for the `serve*` modules' tests: a backend that records what it was sent,
//! and host-sim's REST proxy in memory.

use rest_proxy::{RestProxy, RestProxyConfig};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback backend that answers every request with `answer` (a whole HTTP/1.1 response that
/// closes the connection) and keeps each request head, as read, for the test to inspect.
pub async fn recording_backend(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                let _ = conn.write_all(answer).await;
            });
        }
    });
    (addr, heads)
}

/// host-sim's REST proxy (Confluent flavour, in memory) on a loopback port.
pub async fn in_memory_rest_proxy() -> (Arc<RestProxy>, SocketAddr) {
    in_memory_rest_proxy_with(RestProxyConfig::default()).await
}

/// host-sim's REST proxy with `config` (its `listen` replaced by a loopback port).
pub async fn in_memory_rest_proxy_with(config: RestProxyConfig) -> (Arc<RestProxy>, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = RestProxy::new(RestProxyConfig { listen: addr, ..config }).unwrap();
    tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
    (proxy, addr)
}
