//! The replication client layer (`burnledger::replication`) on a real
//! 3-node NATS JetStream cluster (tests/common/nats.rs): appends read back
//! byte for byte and followed in order; the fence (two writers racing, a
//! stale writer, a writer ahead of the stream); a retried append is the
//! same message; killing the stream leader mid-appends loses and doubles
//! nothing; purging; the writer's lease and the epochs; a freshly made
//! snapshot bucket takes an upload at once. Without a server (and without
//! `BURNLEDGER_REQUIRE_NATS=1`) every test says "skipped".
#![cfg(feature = "replication")]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burnledger::replication::{
    AppendError, Holder, Lease, LeaseError, LogStream, ReplicationError, StreamSettings,
};
use bytes::Bytes;
use common::nats::NatsCluster;
use futures_util::{StreamExt, TryStreamExt};
use tokio::time::{timeout, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn settings(cluster: &NatsCluster, stream: &str) -> StreamSettings {
    StreamSettings {
        servers: cluster.urls(),
        stream: stream.into(),
        replicas: 3,
        request_timeout: Duration::from_secs(2),
    }
}

async fn connect(cluster: &NatsCluster, stream: &str) -> LogStream {
    LogStream::connect(&settings(cluster, stream))
        .await
        .expect("connect")
}

/// A writer's message id, as the journal makes them.
fn id(stream: &str, epoch: u64, n: u64) -> String {
    format!("{stream}-{epoch}-{n}")
}

/// Payloads of every byte value and of several sizes (up to 64 KiB).
fn payload(n: u64) -> Bytes {
    let len = [0usize, 1, 255, 256, 4096, 65_536][(n % 6) as usize];
    Bytes::from(
        (0..len)
            .map(|i| (i as u64 * 31 + n) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The next item of a followed stream, within the deadline.
async fn next<S>(followed: &mut S) -> burnledger::replication::StreamMessage
where
    S: futures_util::Stream<
            Item = Result<burnledger::replication::StreamMessage, ReplicationError>,
        > + Unpin,
{
    timeout(DEADLINE, followed.next())
        .await
        .expect("a followed message within the deadline")
        .expect("the follow stream does not end")
        .expect("a message, not an error")
}

#[tokio::test]
async fn appends_read_back_byte_for_byte_and_follow_sees_the_rest() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let log = connect(&cluster, "reads").await;
    assert_eq!(log.name(), "reads");
    assert_eq!(log.last_sequence().await.unwrap(), 0);

    for n in 1..=20u64 {
        let seq = log
            .append(n - 1, &id("reads", 1, n), payload(n), DEADLINE)
            .await
            .unwrap();
        assert_eq!(seq, n, "one message per append, sequences consecutive");
    }
    assert_eq!(log.last_sequence().await.unwrap(), 20);
    assert_eq!(log.first_sequence().await.unwrap(), 1);
    for n in 1..=20u64 {
        let m = log.message(n).await.unwrap().expect("message present");
        assert_eq!(m.seq, n);
        assert_eq!(m.msg_id.as_deref(), Some(id("reads", 1, n).as_str()));
        assert_eq!(m.payload, payload(n), "message {n} read back byte for byte");
    }
    assert_eq!(log.message(21).await.unwrap(), None);

    // A second connection (another seed first) sees the same stream.
    let mut other = settings(&cluster, "reads");
    other.servers.rotate_left(1);
    let other = LogStream::connect(&other).await.unwrap();
    assert_eq!(other.last_sequence().await.unwrap(), 20);

    let mut followed = other.follow(11).await.unwrap();
    for n in 11..=20u64 {
        let m = next(&mut followed).await;
        assert_eq!((m.seq, m.payload), (n, payload(n)));
        assert_eq!(m.msg_id.as_deref(), Some(id("reads", 1, n).as_str()));
    }
    log.append(20, &id("reads", 1, 21), payload(21), DEADLINE)
        .await
        .unwrap();
    let m = next(&mut followed).await;
    assert_eq!(
        (m.seq, m.payload),
        (21, payload(21)),
        "a new append is followed"
    );

    // The stream exists with 3 replicas: asking for 1 is refused, naming both.
    let mut one = settings(&cluster, "reads");
    one.replicas = 1;
    match LogStream::connect(&one).await {
        Err(e @ ReplicationError::ReplicasMismatch { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("3 replicas") && text.contains("ask for 1"),
                "{text}"
            );
        }
        other => panic!("expected ReplicasMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn two_writers_racing_at_one_sequence_exactly_one_wins() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let a = connect(&cluster, "race").await;
    let mut b_settings = settings(&cluster, "race");
    b_settings.servers.reverse();
    let b = LogStream::connect(&b_settings).await.unwrap();

    let mut last = 0u64;
    let (mut a_won, mut b_won) = (0, 0);
    for round in 1..=60u64 {
        let (ida, idb) = (id("race", 1, round), id("race", 2, round));
        let (ra, rb) = tokio::join!(
            a.append(last, &ida, Bytes::from_static(b"a"), DEADLINE),
            b.append(last, &idb, Bytes::from_static(b"b"), DEADLINE),
        );
        let want = last + 1;
        let winner = match (ra, rb) {
            (Ok(seq), Err(AppendError::Fenced { seq: at, by })) => {
                assert_eq!((seq, at), (want, want), "round {round}");
                assert_eq!(by.as_deref(), Some(ida.as_str()), "round {round}");
                a_won += 1;
                ida
            }
            (Err(AppendError::Fenced { seq: at, by }), Ok(seq)) => {
                assert_eq!((seq, at), (want, want), "round {round}");
                assert_eq!(by.as_deref(), Some(idb.as_str()), "round {round}");
                b_won += 1;
                idb
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        let at = a.message(want).await.unwrap().unwrap();
        assert_eq!(
            at.msg_id,
            Some(winner),
            "round {round}: the winner's message"
        );
        last = want;
    }
    assert_eq!(
        a.last_sequence().await.unwrap(),
        60,
        "one message per round"
    );
    eprintln!("race: a won {a_won}, b won {b_won}");

    // A writer whose expected_last is stale (another took over) is fenced.
    let taken = a
        .append(
            last,
            &id("race", 3, 1),
            Bytes::from_static(b"new writer"),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(taken, last + 1);
    for stale in [last, last - 1, 1, 0] {
        let got = b
            .append(
                stale,
                &id("race", 2, 1000 + stale),
                Bytes::from_static(b"old"),
                DEADLINE,
            )
            .await;
        let holder = a.message(stale + 1).await.unwrap().unwrap().msg_id;
        assert_eq!(
            got,
            Err(AppendError::Fenced {
                seq: stale + 1,
                by: holder
            }),
            "stale expected_last {stale}"
        );
    }
    // A writer ahead of the stream is fenced too (no message of anyone's).
    let ahead = b
        .append(
            taken + 5,
            &id("race", 2, 2000),
            Bytes::from_static(b"x"),
            DEADLINE,
        )
        .await;
    assert_eq!(
        ahead,
        Err(AppendError::Fenced {
            seq: taken + 6,
            by: None
        })
    );
    assert_eq!(
        a.last_sequence().await.unwrap(),
        taken,
        "no refused append landed"
    );
}

#[tokio::test]
async fn the_same_append_retried_after_it_landed_is_the_same_message() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let log = connect(&cluster, "retry").await;
    let first = id("retry", 1, 1);
    assert_eq!(log.append(0, &first, payload(7), DEADLINE).await, Ok(1));
    // The caller did not hear the answer and sends it again.
    assert_eq!(log.append(0, &first, payload(7), DEADLINE).await, Ok(1));
    assert_eq!(
        log.last_sequence().await.unwrap(),
        1,
        "not a second message"
    );

    // Still ours after the stream moved on.
    assert_eq!(
        log.append(1, &id("retry", 1, 2), payload(8), DEADLINE)
            .await,
        Ok(2)
    );
    assert_eq!(log.append(0, &first, payload(7), DEADLINE).await, Ok(1));
    assert_eq!(log.last_sequence().await.unwrap(), 2);
    assert_eq!(log.message(1).await.unwrap().unwrap().payload, payload(7));
}

#[tokio::test]
async fn purging_keeps_the_sequence_and_later_and_following_a_purged_start_is_a_gap() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let log = connect(&cluster, "purge").await;
    for n in 1..=10u64 {
        log.append(n - 1, &id("purge", 1, n), payload(n), DEADLINE)
            .await
            .unwrap();
    }
    log.purge_below(6).await.unwrap();
    assert_eq!(log.first_sequence().await.unwrap(), 6);
    assert_eq!(log.last_sequence().await.unwrap(), 10);
    assert_eq!(log.message(5).await.unwrap(), None);
    assert_eq!(log.message(6).await.unwrap().unwrap().payload, payload(6));

    let mut followed = log.follow(1).await.unwrap();
    let first = timeout(DEADLINE, followed.next()).await.unwrap().unwrap();
    assert!(
        matches!(
            first,
            Err(ReplicationError::Gap {
                expected: 1,
                got: 6,
                ..
            })
        ),
        "{first:?}"
    );
    assert!(
        timeout(DEADLINE, followed.next()).await.unwrap().is_none(),
        "ends after a gap"
    );

    match log.purge_below(12).await {
        Err(ReplicationError::PurgeBeyondEnd {
            seq: 12, last: 10, ..
        }) => {}
        other => panic!("expected PurgeBeyondEnd, got {other:?}"),
    }
    // Appends go on from the same sequence.
    assert_eq!(
        log.append(10, &id("purge", 1, 11), payload(11), DEADLINE)
            .await,
        Ok(11)
    );
}

/// A bucket's stream is made before its replicas elect a leader, and an
/// upload before that finds "no stream"; so may one after it, through a
/// server that does not know yet where the stream lives (CI failed both
/// ways): a freshly made snapshot bucket has a leader once opened, and
/// takes an upload at once (eight buckets in turn).
#[tokio::test]
async fn a_freshly_made_snapshot_bucket_takes_an_upload_at_once() {
    use burnledger::replication::snapshots::SnapshotStore;
    use burnledger::storage::snapshot::SnapshotFile;
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.snap");
    std::fs::write(&path, vec![7u8; 300_000]).unwrap();
    for n in 1..=8u64 {
        let log = connect(&cluster, &format!("fresh{n}")).await;
        let store = SnapshotStore::open(&log).await.unwrap();
        let bucket = format!("OBJ_fresh{n}-snapshots");
        assert!(
            cluster.stream_leader(&bucket).is_some(),
            "{bucket} has no leader"
        );
        let file = SnapshotFile {
            path: path.clone(),
            lsn: n,
            bytes: 300_000,
        };
        store.put(&file).await.unwrap();
        // Listed soon, if not at once: a listing right after the bucket is
        // made may count nothing pending yet (see `SnapshotStore::lsns`).
        let listed = Instant::now() + Duration::from_secs(10);
        let mut lsns = store.lsns().await.unwrap();
        while lsns.is_empty() && Instant::now() < listed {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lsns = store.lsns().await.unwrap();
        }
        assert_eq!(lsns, vec![n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_mid_appends_loses_and_doubles_nothing() {
    let Some(mut cluster) = NatsCluster::start() else {
        return;
    };
    let log = connect(&cluster, "failover").await;
    // A follower from the start, through the kill (its consumer lives on
    // one node and is recreated elsewhere when that one goes).
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let follower = tokio::spawn({
        let mut reversed = settings(&cluster, "failover");
        reversed.servers.reverse();
        let reader = LogStream::connect(&reversed).await.unwrap();
        let seen = seen.clone();
        async move {
            let mut followed = reader.follow(1).await.unwrap();
            while let Some(item) = followed.next().await {
                match item {
                    Ok(m) => seen.lock().unwrap().push(m.msg_id.unwrap()),
                    Err(e @ ReplicationError::Gap { .. }) => panic!("follower: {e}"),
                    Err(e) => eprintln!("follower: {e} (goes on)"),
                }
            }
        }
    });
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (log, acked, stop) = (log.clone(), acked.clone(), stop.clone());
        async move {
            let mut oks: Vec<(u64, String)> = Vec::new();
            let mut last = 0u64;
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let msg_id = id("failover", 1, last + 1);
                let began = Instant::now();
                let seq = log
                    .append(last, &msg_id, payload(last + 1), DEADLINE)
                    .await
                    .unwrap_or_else(|e| panic!("append after {last}: {e}"));
                slowest = slowest.max(began.elapsed());
                assert_eq!(seq, last + 1);
                oks.push((seq, msg_id));
                last = seq;
                acked.store(last, Ordering::SeqCst);
            }
            (oks, slowest)
        }
    });

    let wait_for = |target: u64| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            while acked.load(Ordering::SeqCst) < target {
                assert!(Instant::now() < deadline, "appends stuck below {target}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(30).await;
    let leader = loop {
        if let Some(leader) = cluster.stream_leader("failover") {
            break leader;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.kill(leader);
    let at_kill = acked.load(Ordering::SeqCst);
    wait_for(at_kill + 30).await;
    stop.store(true, Ordering::SeqCst);
    let (oks, slowest) = writer.await.unwrap();
    eprintln!(
        "killed n{} at {at_kill}; {} appends acknowledged; slowest append {slowest:?}",
        leader + 1,
        oks.len()
    );

    let last = oks.last().unwrap().0;
    assert_eq!(
        log.last_sequence().await.unwrap(),
        last,
        "no message beyond the acked"
    );
    let mut ids = HashSet::new();
    for (seq, msg_id) in &oks {
        let m = log
            .message(*seq)
            .await
            .unwrap()
            .expect("acked message present");
        assert_eq!(m.msg_id.as_ref(), Some(msg_id), "seq {seq}");
        assert_eq!(m.payload, payload(*seq));
        assert!(ids.insert(msg_id.clone()), "{msg_id} twice");
    }
    let followed: Vec<_> = log
        .follow(1)
        .await
        .unwrap()
        .take(oks.len())
        .map(|m| m.unwrap().msg_id.unwrap())
        .collect()
        .await;
    let expected: Vec<_> = oks.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(followed, expected, "the stream in order, each once");
    let deadline = Instant::now() + DEADLINE;
    while seen.lock().unwrap().len() < expected.len() && !follower.is_finished() {
        assert!(Instant::now() < deadline, "the follower fell behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !follower.is_finished(),
        "the follower stopped: {:?}",
        follower.await
    );
    assert_eq!(
        *seen.lock().unwrap(),
        expected,
        "followed through the kill: in order, each once"
    );
    follower.abort();

    cluster.restart(leader);
    cluster.wait_until("the replicas agree after the restart", |c| {
        let states: Vec<_> = (0..3).map(|i| c.replica_state(i, "failover")).collect();
        states[0]
            .as_ref()
            .is_some_and(|s| s.last_seq == last && s.messages == last)
            && states.iter().all(|s| *s == states[0])
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_taken_once_renewed_lapses_and_epochs_never_repeat() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let log = connect(&cluster, "leased").await;
    let ttl = Duration::from_secs(2);
    let lease = Lease::open(&log, ttl).await.unwrap();
    let other_node = Lease::open(&connect(&cluster, "leased").await, ttl)
        .await
        .unwrap();
    match Lease::open(&log, ttl * 2).await {
        Err(e @ ReplicationError::InvalidSettings(_)) => {
            let text = e.to_string();
            assert!(text.contains("2s") && text.contains("4s"), "{text}");
        }
        other => panic!("a lease bucket with another TTL: expected a refusal, got {other:?}"),
    }
    let a = Holder {
        node: "a".into(),
        epoch: 1,
        url: Some("http://127.0.0.1:1".into()),
    };
    let b = Holder {
        node: "b".into(),
        epoch: 2,
        url: None,
    };

    // Epochs from two tasks at once: distinct, each task's increasing.
    let take = |lease: Lease| async move {
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(lease.next_epoch().await.unwrap());
        }
        got
    };
    let (x, y) = tokio::join!(take(lease.clone()), take(other_node.clone()));
    for got in [&x, &y] {
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }
    let all: HashSet<u64> = x.iter().chain(&y).copied().collect();
    assert_eq!(all.len(), 20, "distinct epochs: {x:?} {y:?}");
    let highest = *all.iter().max().unwrap();

    assert_eq!(lease.holder().await.unwrap(), None);
    let rev = lease.acquire(&a).await.unwrap();
    assert_eq!(other_node.holder().await.unwrap(), Some((a.clone(), rev)));
    match other_node.acquire(&b).await {
        Err(LeaseError::Taken(holder)) => assert_eq!(holder, a),
        other => panic!("expected Taken, got {other:?}"),
    }
    match other_node.renew(&b, rev).await {
        Err(LeaseError::Lost(Some(holder))) => assert_eq!(holder, a),
        other => panic!("expected Lost(a), got {other:?}"),
    }

    // Renewals keep it past its TTL (paced at a third of the TTL: the
    // pauses are the time a lease must survive, not a wait for work).
    let mut rev = rev;
    let kept_until = Instant::now() + ttl * 2;
    while Instant::now() < kept_until {
        let renewed = lease.renew(&a, rev).await.unwrap();
        assert!(renewed > rev);
        rev = renewed;
        tokio::time::sleep(ttl / 3).await;
    }
    let rev = lease.renew(&a, rev).await.unwrap();
    let renewed_at = Instant::now();
    assert_eq!(other_node.holder().await.unwrap(), Some((a.clone(), rev)));

    // Unrenewed, it lapses on the servers' clock: not before the TTL,
    // within TTL + margin.
    let margin = Duration::from_secs(5);
    while other_node.holder().await.unwrap().is_some() {
        assert!(renewed_at.elapsed() < ttl + margin, "lease did not lapse");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lapsed_after = renewed_at.elapsed();
    assert!(
        lapsed_after >= ttl - Duration::from_millis(300),
        "lapsed after {lapsed_after:?}"
    );
    eprintln!("lease lapsed {lapsed_after:?} after its last renewal (ttl {ttl:?})");

    let b_rev = other_node.acquire(&b).await.unwrap();
    assert_eq!(lease.holder().await.unwrap(), Some((b.clone(), b_rev)));
    match lease.renew(&a, rev).await {
        Err(LeaseError::Lost(Some(holder))) => assert_eq!(holder, b),
        other => panic!("expected Lost(b), got {other:?}"),
    }
    // Releasing someone else's revision leaves it alone; the holder's frees it.
    lease.release(rev).await.unwrap();
    assert_eq!(lease.holder().await.unwrap(), Some((b.clone(), b_rev)));
    other_node.release(b_rev).await.unwrap();
    assert_eq!(lease.holder().await.unwrap(), None);
    let again = lease.acquire(&a).await.unwrap();
    assert_eq!(other_node.holder().await.unwrap(), Some((a, again)));

    // Epochs outlive the lease's lapse.
    assert!(lease.next_epoch().await.unwrap() > highest);
}

/// A follower waiting at the stream's end whose consumer goes away before
/// its first message (deleted here; a node's death does the same) gets the
/// next message, not the stream again from its start (async-nats 0.51's
/// ordered consumer, recreated then, starts from the first message).
#[tokio::test]
async fn a_follower_whose_consumer_is_lost_before_its_first_message_resumes_at_its_start() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let log = connect(&cluster, "idle").await;
    for n in 1..=5u64 {
        log.append(n - 1, &id("idle", 1, n), payload(n), DEADLINE)
            .await
            .unwrap();
    }
    let mut followed = log.follow(6).await.unwrap();

    let js = async_nats::jetstream::new(async_nats::connect(cluster.urls()).await.unwrap());
    let stream = js.get_stream("idle").await.unwrap();
    let names: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    assert_eq!(names.len(), 1, "the follower's consumer: {names:?}");
    stream.delete_consumer(&names[0]).await.unwrap();

    log.append(5, &id("idle", 1, 6), payload(6), DEADLINE)
        .await
        .unwrap();
    let m = next(&mut followed).await;
    assert_eq!((m.seq, m.payload), (6, payload(6)));
}

/// A stream leader paused (SIGSTOP) mid-appends — with the writer
/// connected to it, whose TCP connection stays open — is replaced: the
/// writer leaves the silent server for another and its appends go on;
/// resumed, the old leader rejoins as a follower, and nothing acknowledged
/// is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_stream_leader_is_replaced_and_rejoins_as_a_follower() {
    let Some(mut cluster) = NatsCluster::start() else {
        return;
    };
    let log = connect(&cluster, "paused").await;
    let append = |log: LogStream, n: u64| async move {
        log.append(n - 1, &id("paused", 1, n), payload(n), DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("append {n}: {e}"))
    };
    let mut last = 0u64;
    for _ in 0..10 {
        last = append(log.clone(), last + 1).await;
    }
    let leader = cluster.stream_leader("paused").expect("a stream leader");
    // A writer connected to the leader's node (it learns the others from it).
    let mut on_leader = settings(&cluster, "paused");
    on_leader.servers = vec![cluster.urls()[leader].clone()];
    let writer = LogStream::connect(&on_leader).await.unwrap();
    last = append(writer.clone(), last + 1).await;

    cluster.stop(leader);
    let began = Instant::now();
    for _ in 0..10 {
        last = append(writer.clone(), last + 1).await;
    }
    eprintln!(
        "leader n{} paused: 10 appends took {:?}",
        leader + 1,
        began.elapsed()
    );
    cluster.cont(leader);
    for _ in 0..10 {
        last = append(writer.clone(), last + 1).await;
    }
    assert_eq!(last, 31);
    for n in 1..=31u64 {
        let m = log
            .message(n)
            .await
            .unwrap()
            .expect("acked message present");
        assert_eq!(m.msg_id, Some(id("paused", 1, n)));
    }
    cluster.wait_until("the resumed node's replica agrees", |c| {
        let states: Vec<_> = (0..3).map(|i| c.replica_state(i, "paused")).collect();
        states[0]
            .as_ref()
            .is_some_and(|s| s.last_seq == 31 && s.messages == 31)
            && states.iter().all(|s| *s == states[0])
    });
    // The harness can still kill it (its process is the one it started).
    cluster.kill(leader);
}
