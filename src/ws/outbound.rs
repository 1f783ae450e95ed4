//! The session's output, decoupled from the socket.
//!
//! actix-web-actors runs a session actor only while the HTTP writer pulls its output, so a client
//! that stops reading would freeze its own session: no heartbeat, no mailbox, no way to notice
//! and close it. Here a task on the session's thread drives the output into a channel and the
//! response reads the channel, so the actor runs whatever the reader does. The [`OutboundGauge`]
//! tells the session how many bytes wait for the reader, which is what its back-pressure policy
//! looks at; the policy closes a reader before that amount grows past its limit.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Empties the pipe and ends the response (set up by [`decouple`]).
type FreePipe = Box<dyn Fn()>;

/// Shared between a session and its response stream (same thread).
#[derive(Clone, Default)]
pub struct OutboundGauge {
    /// Bytes handed to the HTTP writer so far.
    pulled: Rc<Cell<u64>>,
    /// The writer found nothing waiting: the session's writes have all gone out.
    drained: Rc<Cell<bool>>,
    /// End the response now, dropping what waits (a reader too slow to keep).
    aborted: Rc<Cell<bool>>,
    /// Frees what waits in the pipe at once: the HTTP writer does not poll the body while its
    /// own buffer is full, which is exactly when a reader is too slow.
    on_abort: Rc<RefCell<Option<FreePipe>>>,
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
        if let Some(free) = self.on_abort.borrow_mut().take() {
            free();
        }
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.get()
    }
}

/// What waits between the session's output and the HTTP writer. Both ends live on the session's
/// thread; an empty queue holds no allocation (a channel per socket would preallocate blocks,
/// and there are tens of thousands of sockets).
struct Pipe<E> {
    queue: VecDeque<Result<Bytes, E>>,
    /// The writer, waiting for bytes.
    waiting: Option<Waker>,
    /// The session's output ended.
    finished: bool,
    /// The writer is gone (client disconnected, or aborted).
    dropped: bool,
}

// Not derived: that would ask `E: Default`.
impl<E> Default for Pipe<E> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            waiting: None,
            finished: false,
            dropped: false,
        }
    }
}

impl<E> Pipe<E> {
    /// Frees what waits and stops taking more; a waiting writer is woken to end the response.
    fn close(&mut self) {
        self.queue = VecDeque::new();
        self.dropped = true;
        if let Some(writer) = self.waiting.take() {
            writer.wake();
        }
    }
}

/// The response body: what the session wrote, as the writer takes it.
pub struct Metered<E> {
    pipe: Rc<RefCell<Pipe<E>>>,
    gauge: OutboundGauge,
}

/// Spawns the task that drives `output` (the session's context) on the current thread and
/// returns the response body reading from it.
pub fn decouple<S, E>(output: S, gauge: OutboundGauge) -> Metered<E>
where
    S: Stream<Item = Result<Bytes, E>> + 'static,
    E: 'static,
{
    let pipe: Rc<RefCell<Pipe<E>>> = Rc::default();
    let weak = Rc::downgrade(&pipe);
    *gauge.on_abort.borrow_mut() = Some(Box::new(move || {
        if let Some(pipe) = weak.upgrade() {
            pipe.borrow_mut().close();
        }
    }));
    let producer = pipe.clone();
    actix_web::rt::spawn(async move {
        let mut output = Box::pin(output);
        while let Some(item) = output.next().await {
            let mut pipe = producer.borrow_mut();
            // The writer is gone: dropping the context stops the session.
            if pipe.dropped {
                return;
            }
            pipe.queue.push_back(item);
            if let Some(writer) = pipe.waiting.take() {
                writer.wake();
            }
        }
        let mut pipe = producer.borrow_mut();
        pipe.finished = true;
        if let Some(writer) = pipe.waiting.take() {
            writer.wake();
        }
    });
    Metered { pipe, gauge }
}

impl<E> Stream for Metered<E> {
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut pipe = self.pipe.borrow_mut();
        if pipe.dropped {
            // Aborted: what waited is freed already.
            return Poll::Ready(None);
        }
        match pipe.queue.pop_front() {
            Some(item) => {
                if let Ok(bytes) = &item {
                    self.gauge
                        .pulled
                        .set(self.gauge.pulled.get() + bytes.len() as u64);
                }
                if pipe.queue.is_empty() {
                    // Give back what a burst made the queue hold.
                    pipe.queue.shrink_to(4);
                }
                Poll::Ready(Some(item))
            }
            None if pipe.finished => Poll::Ready(None),
            None => {
                self.gauge.drained.set(true);
                // The writer polls on every read of the socket; keep the waker it already gave.
                match &pipe.waiting {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => pipe.waiting = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<E> Drop for Metered<E> {
    fn drop(&mut self) {
        self.pipe.borrow_mut().close();
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
