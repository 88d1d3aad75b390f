//! Triton's protocols as Rust types: the `inference` gRPC service and model config, and the
//! standard `grpc.health.v1` health service, plus their descriptors for reflection.
use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

pub mod inference {
    tonic::include_proto!("inference");
}

pub mod health {
    pub mod v1 {
        tonic::include_proto!("grpc.health.v1");
    }
}

/// The encoded `FileDescriptorSet` of all the .proto files above.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// Descriptors of every message, decoded once.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("embedded descriptor set is valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_has_services_and_model_config() {
        let pool = descriptor_pool();
        let service = pool.get_service_by_name("inference.GRPCInferenceService").unwrap();
        assert_eq!(service.methods().count(), 20);
        assert!(pool.get_message_by_name("inference.ModelConfig").is_some());
        assert!(pool.get_service_by_name("grpc.health.v1.Health").is_some());
    }
}
