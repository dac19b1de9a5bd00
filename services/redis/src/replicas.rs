//! Replica acknowledgements (`--redis-min-replica-acks`): Redis replicates asynchronously, so a
//! write the master acknowledged can die with it. Waiting for `WAIT n timeout` on the connection
//! that wrote makes a failover unable to lose it. Shared by every write that acks something to a
//! client: the messaging enqueue and the federation outbox.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::{ClusterHash, CustomCommand, Key, Value};

use crate::{Redis, RedisError, Script};

/// The replica-ack flags (with `TASSIS_*` env twins) of the roles whose writes are acked to
/// clients: messaging (enqueues, federation outbox pushes) and keystore (federation claims).
#[derive(Clone, Debug, clap::Args)]
pub struct ReplicaAckArgs {
    /// Redis backend: a write acked to a client (a send, a federation claim) is acked only once
    /// it reached this many replicas of its master (Redis WAIT), so a master failover cannot lose
    /// it. 0: once the master has it (replication is asynchronous: a failover may lose the last
    /// writes).
    #[arg(long, env = "TASSIS_REDIS_MIN_REPLICA_ACKS", default_value_t = 0)]
    pub redis_min_replica_acks: u32,

    /// How long a write waits for those replicas; if fewer confirm in time the request fails
    /// with `unavailable` (the client retries; a message may then be delivered twice).
    #[arg(long, env = "TASSIS_REDIS_REPLICA_ACK_TIMEOUT", default_value = "500ms", value_parser = tassis_runtime::config::parse_duration)]
    pub redis_replica_ack_timeout: Duration,
}

impl Default for ReplicaAckArgs {
    fn default() -> Self {
        Self {
            redis_min_replica_acks: 0,
            redis_replica_ack_timeout: Duration::from_millis(500),
        }
    }
}

impl ReplicaAckArgs {
    pub fn validate(&self) -> Result<(), tassis_runtime::RuntimeError> {
        tassis_runtime::config::ensure(self.redis_min_replica_acks <= 16, || {
            "--redis-min-replica-acks must be 0..=16".into()
        })?;
        tassis_runtime::config::ensure(self.redis_replica_ack_timeout >= Duration::from_millis(1), || {
            "--redis-replica-ack-timeout must be at least 1ms".into()
        })
    }

    /// (replicas, timeout) when writes wait for replicas.
    pub fn acks(&self) -> Option<(u32, Duration)> {
        (self.redis_min_replica_acks > 0).then_some((self.redis_min_replica_acks, self.redis_replica_ack_timeout))
    }
}

/// Runs a write `script` and, with `acks` = (n, timeout), waits until n replicas have it.
///
/// The script's last ARGV (appended here) is `1` when it must also report the node that ran it:
/// it then returns `[reply, CLUSTER MYID]` instead of `reply`. Write and WAIT go through one
/// client (one connection per node), since WAIT counts what its own connection wrote. A nil reply
/// (the script wrote nothing) is returned without waiting. Returns the script's own reply.
pub async fn run_acked(
    redis: &Redis,
    script: &Script,
    keys: Vec<Key>,
    mut args: Vec<Value>,
    acks: Option<(u32, Duration)>,
) -> Result<Value, RedisError> {
    args.push(Value::from(if acks.is_some() && redis.is_cluster() { "1" } else { "" }));
    let client = redis.pool().next();
    let reply: Value = script.run(client, keys, args).await?;
    let (reply, node) = match reply {
        Value::Array(mut v) if v.len() == 2 => {
            let node = v.pop().and_then(|n| n.as_string());
            (v.pop().unwrap_or(Value::Null), node)
        }
        other => (other, None),
    };
    if let (Some((n, timeout)), false) = (acks, reply.is_null()) {
        wait(client, node.as_deref(), n, timeout).await?;
    }
    Ok(reply)
}

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
