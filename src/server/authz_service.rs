//! The `envoy.service.auth.v3.Authorization` gRPC service as served: the generated
//! `AuthorizationServer` less what certgate does not use (compression), with a codec that
//! writes an [`Answer`] (a memoised allow splices its request id in as it is written) instead
//! of encoding a `CheckResponse` built for every check.

use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstDecoder;

use super::answer::Answer;
use super::ext_authz::ExtAuthz;

/// The gRPC service name Envoy calls.
pub(crate) const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The ext_authz service for a tonic router.
#[derive(Clone)]
pub struct AuthorizationService {
    inner: Arc<ExtAuthz>,
    max_decoding_message_size: usize,
}

impl AuthorizationService {
    /// Serve `inner`, refusing requests larger than `max_decoding_message_size` bytes.
    pub fn new(inner: ExtAuthz, max_decoding_message_size: usize) -> Self {
        AuthorizationService {
            inner: Arc::new(inner),
            max_decoding_message_size,
        }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower_service::Service<http::Request<B>> for AuthorizationService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = Check(self.inner.clone());
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(AnswerCodec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(method, req).await)
        })
    }
}

struct Check(Arc<ExtAuthz>);

impl UnaryService<CheckRequest> for Check {
    type Response = Answer;
    type Future = BoxFuture<Response<Answer>, Status>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { Ok(Response::new(inner.answer(request).await)) })
    }
}

/// Decodes a `CheckRequest` as the generated server does; encodes an [`Answer`].
struct AnswerCodec;

impl Codec for AnswerCodec {
    type Encode = Answer;
    type Decode = CheckRequest;
    type Encoder = AnswerEncoder;
    type Decoder = ProstDecoder<CheckRequest>;

    fn encoder(&mut self) -> AnswerEncoder {
        AnswerEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<CheckRequest> {
        ProstDecoder::default()
    }
}

struct AnswerEncoder;

impl Encoder for AnswerEncoder {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, item: Answer, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf);
        Ok(())
    }
}
