//! The session's output, decoupled from the socket.
//!
//! actix-web-actors runs a session actor only while the HTTP writer pulls its output, so a client
//! that stops reading would freeze its own session: no heartbeat, no mailbox, no way to notice
//! and close it. Here a task on the session's thread drives the output into a channel and the
//! response reads the channel, so the actor runs whatever the reader does. The [`OutboundGauge`]
//! tells the session how many bytes wait for the reader, which is what its back-pressure policy
//! looks at; the policy closes a reader before that amount grows past its limit.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Shared between a session and its response stream (same thread).
#[derive(Clone, Default)]
pub struct OutboundGauge {
    /// Bytes handed to the HTTP writer so far.
    pulled: Rc<Cell<u64>>,
    /// The writer found nothing waiting: the session's writes have all gone out.
    drained: Rc<Cell<bool>>,
    /// End the response now, dropping what waits (a reader too slow to keep).
    aborted: Rc<Cell<bool>>,
}

impl OutboundGauge {
    pub fn pulled(&self) -> u64 {
        self.pulled.get()
    }

    /// True once since the last call if everything written had been pulled.
    pub fn take_drained(&self) -> bool {
        self.drained.replace(false)
    }

    /// Ends the response without waiting for the reader.
    pub fn abort(&self) {
        self.aborted.set(true);
    }
}

/// The response body: what the session wrote, as the writer takes it.
pub struct Metered<E> {
    queue: Option<mpsc::UnboundedReceiver<Result<Bytes, E>>>,
    gauge: OutboundGauge,
}

/// Spawns the task that drives `output` (the session's context) on the current thread and
/// returns the response body reading from it.
pub fn decouple<S, E>(output: S, gauge: OutboundGauge) -> Metered<E>
where
    S: Stream<Item = Result<Bytes, E>> + 'static,
    E: 'static,
{
    let (sender, queue) = mpsc::unbounded_channel();
    actix_web::rt::spawn(async move {
        let mut output = Box::pin(output);
        while let Some(item) = output.next().await {
            // The response is gone (client disconnected, or aborted): dropping the context
            // stops the session.
            if sender.send(item).is_err() {
                break;
            }
        }
    });
    Metered {
        queue: Some(queue),
        gauge,
    }
}

impl<E> Stream for Metered<E> {
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.gauge.aborted.get() {
            // Frees what waited; the sender sees the channel closed.
            self.queue = None;
            return Poll::Ready(None);
        }
        let Some(queue) = self.queue.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = queue.poll_recv(cx);
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
