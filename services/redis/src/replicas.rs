//! Replica acknowledgements (`--redis-min-replica-acks`): Redis replicates asynchronously, so a
//! write the master acknowledged can die with it. Waiting for `WAIT n timeout` on the connection
//! that wrote makes a failover unable to lose it. Shared by every write that acks something to a
//! client: the messaging enqueue and the federation outbox.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::{ClusterHash, CustomCommand};

use crate::RedisError;

/// Waits until `n` replicas have every write made so far on `client`'s connection to `node` (the
/// id of the cluster node that ran the write, as `CLUSTER MYID` inside the script returned it;
/// None on a standalone server), at most `timeout`. Fails if fewer confirmed in time.
///
/// On a cluster, WAIT must reach the node that ran the script: routing by the key's slot could
/// pick another one while the slot migrates (an ASK sends the script to the importing node, the
/// slot still maps to the exporting one), and WAIT there would count replicas of unrelated writes.
/// Other tasks' commands interleaved on that connection do not matter: WAIT then covers them too.
pub async fn wait(client: &Client, node: Option<&str>, n: u32, timeout: Duration) -> Result<(), RedisError> {
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    // Not marked blocking for fred: that would hold back this client's commands to every node
    // until WAIT answers; Redis itself holds back only what follows on this node's connection, at
    // most the timeout.
    let wait = CustomCommand::new_static("WAIT", ClusterHash::Random, false);
    let args = vec![i64::from(n), ms];
    let reached: i64 = match node {
        Some(id) => {
            let server = client
                .cached_cluster_state()
                .and_then(|r| r.slots().iter().find(|s| *s.id == *id).map(|s| s.primary.clone()))
                .ok_or_else(|| RedisError::Replicas(format!("node {id} that stored the message is not known yet")))?;
            client.with_cluster_node(server).custom(wait, args).await?
        }
        None => client.custom(wait, args).await?,
    };
    if reached < i64::from(n) {
        return Err(RedisError::Replicas(format!(
            "the message reached {reached} of the {n} replicas required within {timeout:?}"
        )));
    }
    Ok(())
}
