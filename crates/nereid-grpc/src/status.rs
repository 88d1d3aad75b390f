//! Core errors as gRPC statuses, with Triton's code mapping (`GrpcStatusUtil::CodeToStatus`).

use nereid_core::{Code, Error};
use tonic::{Response, Status};

pub fn to_status(error: Error) -> Status {
    let code = match error.code {
        Code::Unknown => tonic::Code::Unknown,
        Code::Internal => tonic::Code::Internal,
        Code::NotFound => tonic::Code::NotFound,
        Code::InvalidArg => tonic::Code::InvalidArgument,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::Unsupported => tonic::Code::Unimplemented,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::Cancelled => tonic::Code::Cancelled,
    };
    Status::new(code, error.message)
}

/// A handler's result as the RPC's answer.
pub fn reply<T>(result: nereid_core::Result<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

/// Features this frontend does not serve yet.
pub fn not_supported_yet(feature: &str) -> Status {
    Status::unimplemented(format!("{feature} is not supported yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_as_triton_maps_them() {
        let cases = [
            (Code::Unknown, tonic::Code::Unknown),
            (Code::Internal, tonic::Code::Internal),
            (Code::NotFound, tonic::Code::NotFound),
            (Code::InvalidArg, tonic::Code::InvalidArgument),
            (Code::Unavailable, tonic::Code::Unavailable),
            (Code::Unsupported, tonic::Code::Unimplemented),
            (Code::AlreadyExists, tonic::Code::AlreadyExists),
            (Code::Cancelled, tonic::Code::Cancelled),
        ];
        for (core, grpc) in cases {
            let status = to_status(Error::new(core, "the core's text"));
            assert_eq!(status.code(), grpc);
            assert_eq!(status.message(), "the core's text");
        }
    }
}
