//! Reads WebSocket frames off the socket without buffering more than it must.
//!
//! actix-web-actors' own reader moves everything the socket holds into one growing buffer before
//! decoding a frame; under load that buffer grows without bound (gigabytes in seconds, measured).
//! This reader decodes first and reads more only when no whole frame is buffered, so a socket
//! holds at most one frame (≤ 64 KiB) plus one read: a client sending faster than the engine
//! decodes is held back by TCP instead of filling memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use actix_web::error::PayloadError;
use bytes::BytesMut;
use bytestring::ByteString;
use futures_util::Stream;

pub struct InboundFrames<S> {
    payload: S,
    codec: Codec,
    buffer: BytesMut,
    closed: bool,
}

impl<S> InboundFrames<S> {
    /// Frames over `max_frame` bytes fail with `ProtocolError::Overflow`.
    pub fn new(payload: S, max_frame: usize) -> Self {
        Self {
            payload,
            codec: Codec::new().max_size(max_frame),
            buffer: BytesMut::new(),
            closed: false,
        }
    }
}

fn to_message(frame: Frame) -> Result<Message, ProtocolError> {
    let invalid_utf8 = || {
        ProtocolError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "text frame is not UTF-8",
        ))
    };
    Ok(match frame {
        Frame::Text(data) => Message::Text(ByteString::try_from(data).map_err(|_| invalid_utf8())?),
        Frame::Binary(data) => Message::Binary(data),
        Frame::Ping(data) => Message::Ping(data),
        Frame::Pong(data) => Message::Pong(data),
        Frame::Close(reason) => Message::Close(reason),
        Frame::Continuation(item) => Message::Continuation(item),
    })
}

impl<S> Stream for InboundFrames<S>
where
    S: Stream<Item = Result<bytes::Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Message, ProtocolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // A whole frame in the buffer: hand it out before reading anything more.
            match actix_codec::Decoder::decode(&mut this.codec, &mut this.buffer) {
                Ok(Some(frame)) => return Poll::Ready(Some(to_message(frame))),
                Ok(None) => {}
                Err(error) => {
                    this.closed = true;
                    this.buffer.clear();
                    return Poll::Ready(Some(Err(error)));
                }
            }
            if this.closed {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buffer.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(error))) => {
                    this.closed = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(std::io::Error::other(
                        error.to_string(),
                    )))));
                }
                Poll::Ready(None) => this.closed = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
