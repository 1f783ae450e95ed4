//! Knows how far behind a socket's reader is. The actor writes frames into its context; the HTTP
//! layer pulls the encoded bytes from the stream below only when it can write them. The
//! difference between what the session wrote and what was pulled is what waits for the reader.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// Shared between a session and its response stream (same thread).
#[derive(Clone, Default)]
pub struct OutboundGauge {
    /// Bytes handed to the HTTP writer so far.
    pulled: Rc<Cell<u64>>,
    /// The stream found nothing left to pull: the session's writes have all gone out.
    drained: Rc<Cell<bool>>,
}

impl OutboundGauge {
    pub fn pulled(&self) -> u64 {
        self.pulled.get()
    }

    /// True once since the last call if everything written had been pulled.
    pub fn take_drained(&self) -> bool {
        self.drained.replace(false)
    }
}

/// Wraps the session's output stream and counts what the HTTP writer takes.
pub struct Metered<S> {
    inner: S,
    gauge: OutboundGauge,
}

impl<S> Metered<S> {
    pub fn new(inner: S, gauge: OutboundGauge) -> Self {
        Self { inner, gauge }
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(bytes))) => {
                self.gauge
                    .pulled
                    .set(self.gauge.pulled.get() + bytes.len() as u64);
            }
            Poll::Pending => self.gauge.drained.set(true),
            _ => {}
        }
        polled
    }
}

/// Bytes a server→client frame of `payload` bytes takes on the wire (unmasked header).
pub fn frame_size(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    (payload + header) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_follow_rfc_6455() {
        assert_eq!(frame_size(0), 2);
        assert_eq!(frame_size(125), 127);
        assert_eq!(frame_size(126), 130);
        assert_eq!(frame_size(65_535), 65_539);
        assert_eq!(frame_size(65_536), 65_546);
    }
}
