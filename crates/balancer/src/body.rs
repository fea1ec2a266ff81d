//! The bodies the proxy moves: a request body to a backend (streamed, or buffered so it can
//! be sent again), and a response body that gives the backend's slot and connection back
//! when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::backend::{Sender, Slot};

/// A request body on its way to a backend.
pub enum ReqBody {
    Empty,
    /// Small enough to have been read whole: may be sent again on a retry.
    Full(Option<Bytes>),
    /// Sent as it arrives; the flag tells whether the client is the one being waited for
    /// (its body's last poll found nothing), so a request that times out mid-upload is
    /// blamed on the slow client, not on the backend.
    Stream(Incoming, Arc<AtomicBool>),
}

impl ReqBody {
    /// A copy for another attempt; `None` for a streamed body (it can be sent once).
    pub(crate) fn again(&self) -> Option<ReqBody> {
        match self {
            ReqBody::Empty => Some(ReqBody::Empty),
            ReqBody::Full(bytes) => Some(ReqBody::Full(bytes.clone())),
            ReqBody::Stream(..) => None,
        }
    }

    /// A streamed body's "waiting for the client" flag (see [`ReqBody::Stream`]).
    pub(crate) fn client_stall(&self) -> Option<Arc<AtomicBool>> {
        match self {
            ReqBody::Stream(_, stalled) => Some(stalled.clone()),
            _ => None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream(incoming, stalled) => {
                let polled = Pin::new(incoming).poll_frame(cx);
                stalled.store(polled.is_pending(), Ordering::Relaxed);
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(bytes) => bytes.is_none(),
            ReqBody::Stream(incoming, _) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ReqBody::Stream(incoming, _) => incoming.size_hint(),
        }
    }
}

/// Holds a backend's slot while its answer streams to the client (the slot goes back
/// when the lease is dropped).
pub(crate) struct Lease {
    pub slot: Slot,
    pub sender: Option<Sender>,
}

/// A response body to the client.
pub enum ResBody {
    Local(Option<Bytes>),
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
    },
}

impl ResBody {
    pub(crate) fn local(text: &'static str) -> ResBody {
        ResBody::Local(Some(Bytes::from_static(text.as_bytes())))
    }

    pub(crate) fn upstream(body: Incoming, lease: Lease) -> ResBody {
        let mut res = ResBody::Upstream {
            body,
            lease: Some(lease),
        };
        // Empty answers (HEAD, 204, 304) may never be polled: finish them now.
        if let ResBody::Upstream { body, lease } = &mut res
            && body.is_end_stream()
        {
            finish(lease);
        }
        res
    }
}

/// The answer was read to its end: the connection can carry the next request.
fn finish(lease: &mut Option<Lease>) {
    if let Some(mut lease) = lease.take()
        && let Some(sender) = lease.sender.take()
    {
        lease.slot.backend.put_idle(sender);
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Upstream { body, lease } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => finish(lease),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => finish(lease),
                    // A broken answer: drop the connection with the lease (not pooled).
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(mut held) = lease.take() {
                            held.sender = None;
                        }
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResBody::Local(bytes) => bytes.is_none(),
            ResBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}
