//! A real WebSocket client for tests (tokio-tungstenite over TCP to the engine).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct WsClient {
    stream: Stream,
    /// The `hello` the engine sent on connect.
    pub hello: Value,
}

/// How a socket ended.
#[derive(Debug)]
pub enum Ending {
    Closed(Option<CloseFrame>),
    /// The connection dropped without a close frame.
    Dropped,
}

/// `GET /ws` with `Authorization: Bearer`.
fn upgrade_request(
    address: &str,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("{}/ws", address.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

impl WsClient {
    /// Connects with `Authorization: Bearer` and reads the `hello`.
    pub async fn connect(address: &str, token: &str) -> Self {
        Self::open(upgrade_request(address, token)).await
    }

    /// Connects over a socket with a small receive buffer, so a client that stops reading makes
    /// the engine's side back up quickly.
    pub async fn connect_with_small_buffer(address: &str, token: &str) -> Self {
        let request = upgrade_request(address, token);
        let host = address.trim_start_matches("http://");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(host.parse().unwrap()).await.unwrap();
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("the engine accepts the socket");
        Self::greeted(stream).await
    }

    async fn open(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the engine accepts the socket");
        Self::greeted(stream).await
    }

    /// Reads the engine's `hello` off a fresh socket.
    async fn greeted(stream: Stream) -> Self {
        let mut client = Self {
            stream,
            hello: Value::Null,
        };
        client.hello = client.next_json().await;
        assert_eq!(client.hello["type"], "hello", "{}", client.hello);
        client
    }

    /// Sends any frame (pings, binary) as it is.
    pub async fn send_frame(&mut self, message: Message) {
        self.stream.send(message).await.expect("the socket is open");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("the socket is open");
    }

    /// The next JSON frame (pings are answered by the library and skipped).
    pub async fn next_json(&mut self) -> Value {
        self.next_matching(|_| true).await
    }

    /// The next frame of `kind`, skipping others (map deltas, locations) on the way.
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        self.next_matching(|frame| frame["type"] == kind).await
    }

    /// The next frame for which `matches` holds, within [`FRAME_TIMEOUT`] however many other
    /// frames (pings, deltas) arrive meanwhile.
    pub async fn next_matching(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a frame arrives in time")
                .expect("the socket is open")
                .expect("a readable frame");
            let frame: Value = match message {
                Message::Text(text) => serde_json::from_str(&text).expect("JSON frames"),
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => continue,
            };
            if matches(&frame) {
                return frame;
            }
        }
    }

    /// Reads until the engine closes the socket; returns how.
    pub async fn ending(&mut self, within: Duration) -> Ending {
        let drain = async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(frame))) => return Ending::Closed(frame),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Ending::Dropped,
                }
            }
        };
        tokio::time::timeout(within, drain)
            .await
            .expect("the engine closes the socket in time")
    }
}
