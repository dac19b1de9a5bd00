//! The tassis schemas as Rust types.
//!
//! `tassis` is the public client wire contract (docs/protocol.md); `tassis::{keystore,messaging,
//! attachments}::v1` are the internal gRPC APIs between the gateway and the services, and
//! `tassis::federation::v1` the server-to-server API between federated deployments. Module
//! nesting mirrors the proto packages because generated code refers to `super::` paths.
//! Byte fields are `bytes::Bytes` so payloads move between sockets and gRPC without copies.

/// The public client schema, `package tassis`, and the internal APIs nested under it.
pub mod tassis {
    tonic::include_proto!("tassis");

    /// Internal keystore API.
    pub mod keystore {
        pub mod v1 {
            tonic::include_proto!("tassis.keystore.v1");
        }
    }
    /// Internal messaging API.
    pub mod messaging {
        pub mod v1 {
            tonic::include_proto!("tassis.messaging.v1");
        }
    }
    /// Internal attachments API.
    pub mod attachments {
        pub mod v1 {
            tonic::include_proto!("tassis.attachments.v1");
        }
    }
    /// Server-to-server API between federated deployments.
    pub mod federation {
        pub mod v1 {
            tonic::include_proto!("tassis.federation.v1");
        }
    }
}

pub use prost::Message as ProstMessage;
pub use tassis::attachments::v1 as attachments_v1;
pub use tassis::federation::v1 as federation_v1;
pub use tassis::keystore::v1 as keystore_v1;
pub use tassis::messaging::v1 as messaging_v1;

pub mod address;
