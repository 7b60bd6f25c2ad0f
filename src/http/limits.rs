//! Connection hygiene: a deadline on each request body, and connections
//! closed rather than kept when a body was not read to its end.
//!
//! actix-web bounds the request head (`client_request_timeout`) but not the
//! body: a client that sends headers and half a body held its connection
//! (and a file descriptor) for ever. The [`guard`] middleware wraps every
//! request's body in a stream that fails with [`body_timed_out`] once the
//! deadline passes, so an extractor reading it answers 408
//! `request_timeout`.
//!
//! A body nobody read to its end (a 401 before the body, a 413, a 408, a
//! handler that takes no body) would be drained by actix-http for as long
//! as the client trickles it, when it is chunked. The guard keeps the body's
//! receiving end alive until the answer is written (in the answer's body,
//! [`KeepsRequestBody`]), which makes actix-http
//! close the connection after the answer (`Connection: close`) instead of
//! draining it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::HttpMessage as _;
use futures_util::Stream;

/// The error a body stream fails with once its deadline has passed.
pub fn body_timed_out() -> PayloadError {
    PayloadError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        BodyTimedOut,
    ))
}

/// Whether a body error is the deadline's (see [`body_timed_out`]).
pub fn is_body_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(io)
        if io.get_ref().is_some_and(|inner| inner.is::<BodyTimedOut>()))
}

#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// How long a request's body may take to arrive, counted from its head.
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeout(pub Duration);

/// The request's body, shared by the stream handed to the handlers and the
/// guard (which keeps it alive until the answer is written).
type SharedPayload = Rc<RefCell<Payload>>;

/// The body as the handlers see it: the real one, failing at the deadline.
struct DeadlineBody {
    inner: SharedPayload,
    deadline: Pin<Box<actix_web::rt::time::Sleep>>,
    timed_out: bool,
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut *self.inner.borrow_mut()).poll_next(cx);
        match polled {
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.timed_out = true;
                    Poll::Ready(Some(Err(body_timed_out())))
                }
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

/// An answer's body that keeps the request's body receiver alive until the
/// answer is fully written: actix-http then sees a body still unread and
/// closes the connection instead of draining it (see the module docs).
pub struct KeepsRequestBody {
    body: BoxBody,
    _request_body: Option<SharedPayload>,
}

impl MessageBody for KeepsRequestBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Middleware over the whole app: the body deadline, the close of a
/// connection whose body was not read to its end, and the JSON shape of
/// every error answer (see [`crate::http::error::shape`]).
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<KeepsRequestBody>, actix_web::Error> {
    let timeout = req
        .app_data::<actix_web::web::Data<BodyTimeout>>()
        .map(|t| t.0)
        .unwrap_or(crate::http::BODY_TIMEOUT_DEFAULT);
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        // No body (a GET): nothing to time or to keep.
        return Ok(
            crate::http::error::shape(next.call(req).await?).map_body(|_, body| KeepsRequestBody {
                body,
                _request_body: None,
            }),
        );
    }
    let shared: SharedPayload = Rc::new(RefCell::new(payload));
    let body = DeadlineBody {
        inner: shared.clone(),
        deadline: Box::pin(actix_web::rt::time::sleep(timeout)),
        timed_out: false,
    };
    req.set_payload(Payload::from(
        Box::pin(body) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
    ));
    // An `Err` here (no middleware inside makes one: handler errors are
    // answers by now) would pass unshaped, and its body be drained.
    let response = crate::http::error::shape(next.call(req).await?);
    Ok(response.map_body(|_, body| KeepsRequestBody {
        body,
        _request_body: Some(shared),
    }))
}
