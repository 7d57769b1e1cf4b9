//! The real S3 servers the object-store tests run against (`ferry_tests::s3`),
//! checked for what Ferry's bucket layer relies on: PUT, GET (whole and
//! byte ranges), LIST under a prefix, DELETE, multipart uploads, and
//! conditional writes (create-if-absent, update-if-e-tag). Each test asserts
//! what the server does, so a server that stops honouring a feature fails
//! here, not in a receiver test. Also: s3s-fs killed and restarted, and
//! SeaweedFS with one of its two volume servers killed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use ferry_tests::s3::{self, S3Server, S3Target, SeaweedCluster};
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};

/// Deterministic bytes that do not compress or repeat at part boundaries.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&counter.to_le_bytes());
        out.extend_from_slice(h.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

async fn get_all(store: &AmazonS3, key: &str) -> anyhow::Result<Bytes> {
    let got = store
        .get(&Path::from(key))
        .await
        .with_context(|| format!("GET {key}"))?;
    Ok(got.bytes().await?)
}

async fn list_keys(store: &AmazonS3, prefix: &str) -> anyhow::Result<Vec<String>> {
    let metas: Vec<_> = store.list(Some(&Path::from(prefix))).try_collect().await?;
    let mut keys: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    Ok(keys)
}

/// PUT, GET whole and by range (bounded, offset, suffix, past the end),
/// LIST recursive and by delimiter, DELETE, GET of a missing key.
async fn basic_operations(store: &AmazonS3) -> anyhow::Result<()> {
    let body = pseudo_random(100_000, 1);
    let put = store
        .put(&Path::from("p/a"), PutPayload::from(body.clone()))
        .await
        .context("PUT p/a")?;
    ensure!(put.e_tag.is_some(), "a PUT answers with an e-tag");
    store
        .put(&Path::from("p/b/c"), PutPayload::from_static(b"c"))
        .await?;
    store
        .put(&Path::from("q/d"), PutPayload::from_static(b"d"))
        .await?;

    ensure!(
        get_all(store, "p/a").await? == body[..],
        "GET returns what was PUT"
    );
    let head = store.head(&Path::from("p/a")).await?;
    ensure!(head.size == body.len() as u64, "HEAD size {}", head.size);
    ensure!(
        head.e_tag == put.e_tag,
        "HEAD e-tag {:?} vs PUT's {:?}",
        head.e_tag,
        put.e_tag
    );

    let a = Path::from("p/a");
    let range = store
        .get_range(&a, 70_000..70_100)
        .await
        .context("bounded range")?;
    ensure!(range == body[70_000..70_100], "bounded range GET");
    for (what, r, want) in [
        ("offset", GetRange::Offset(99_990), &body[99_990..]),
        ("suffix", GetRange::Suffix(16), &body[100_000 - 16..]),
        // A range past the end is cut at the end, as S3 does.
        (
            "past the end",
            GetRange::Bounded(99_000..200_000),
            &body[99_000..],
        ),
    ] {
        let got = store
            .get_opts(&a, GetOptions::default().with_range(Some(r)))
            .await
            .with_context(|| format!("{what} range"))?;
        ensure!(got.bytes().await? == want, "{what} range GET");
    }

    ensure!(
        list_keys(store, "p").await? == ["p/a", "p/b/c"],
        "LIST under p/"
    );
    let listed = store.list_with_delimiter(Some(&Path::from("p"))).await?;
    let objects: Vec<String> = listed
        .objects
        .iter()
        .map(|m| m.location.to_string())
        .collect();
    let dirs: Vec<String> = listed
        .common_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    ensure!(
        objects == ["p/a"] && dirs == ["p/b"],
        "LIST with delimiter: {objects:?} {dirs:?}"
    );

    store.delete(&a).await.context("DELETE p/a")?;
    match store.get(&a).await {
        Err(object_store::Error::NotFound { .. }) => {}
        other => bail!("GET of a deleted key: {:?}", other.map(|g| g.meta)),
    }
    ensure!(
        list_keys(store, "p").await? == ["p/b/c"],
        "LIST after DELETE"
    );
    // Deleting a key that is not there succeeds, as on S3.
    store.delete(&a).await.context("DELETE of a missing key")?;
    Ok(())
}

/// A 12 MiB object in three parts (5 + 5 + 2 MiB), read back whole and
/// across a part boundary.
async fn multipart_upload(store: &AmazonS3) -> anyhow::Result<()> {
    const PART: usize = 5 << 20;
    let body = pseudo_random(12 << 20, 2);
    let key = Path::from("multi/twelve");
    let upload = store
        .put_multipart(&key)
        .await
        .context("starting a multipart upload")?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    for piece in body.chunks(1 << 20) {
        writer.wait_for_capacity(2).await?;
        writer.write(piece);
    }
    let put = writer
        .finish()
        .await
        .context("completing a multipart upload")?;
    let head = store.head(&key).await?;
    ensure!(
        head.size == body.len() as u64,
        "size after multipart: {}",
        head.size
    );
    // S3's e-tag of a multipart object is "MD5-OF-PART-MD5S-PARTS".
    eprintln!(
        "multipart e-tag: PUT {:?}, HEAD {:?}",
        put.e_tag, head.e_tag
    );
    ensure!(
        get_all(store, "multi/twelve").await? == body[..],
        "multipart content"
    );
    let across = store
        .get_range(&key, (PART as u64 - 10)..(PART as u64 + 10))
        .await?;
    ensure!(
        across == body[PART - 10..PART + 10],
        "range across a part boundary"
    );
    Ok(())
}

/// `PutMode::Create` and `PutMode::Update`, as the lease lock object uses
/// them. object_store sends `If-None-Match: *` and `If-Match: E-TAG`.
async fn conditional_writes(store: &AmazonS3) -> anyhow::Result<()> {
    let key = Path::from("lock/lease");
    let create = |body: &'static [u8]| {
        let key = key.clone();
        async move {
            store
                .put_opts(&key, PutPayload::from_static(body), PutMode::Create.into())
                .await
        }
    };
    let first = create(b"one").await.context("Create of an absent key")?;
    match create(b"two").await {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        other => bail!("Create of an existing key must fail with AlreadyExists: {other:?}"),
    }
    ensure!(
        get_all(store, "lock/lease").await? == "one",
        "a refused Create left the object"
    );

    let update = |body: &'static [u8], e_tag: Option<String>| {
        let key = key.clone();
        async move {
            let mode = PutMode::Update(UpdateVersion {
                e_tag,
                version: None,
            });
            store
                .put_opts(&key, PutPayload::from_static(body), PutOptions::from(mode))
                .await
        }
    };
    let second = update(b"three", first.e_tag.clone())
        .await
        .context("Update with the current e-tag")?;
    ensure!(second.e_tag != first.e_tag, "an Update changes the e-tag");
    match update(b"four", first.e_tag.clone()).await {
        Err(object_store::Error::Precondition { .. }) => {}
        other => bail!("Update with a stale e-tag must fail with Precondition: {other:?}"),
    }
    ensure!(
        get_all(store, "lock/lease").await? == "three",
        "a refused Update left the object"
    );
    match store
        .put_opts(
            &Path::from("lock/absent"),
            PutPayload::from_static(b"x"),
            PutMode::Update(UpdateVersion {
                e_tag: first.e_tag,
                version: None,
            })
            .into(),
        )
        .await
    {
        Err(object_store::Error::Precondition { .. }) => {}
        other => bail!("Update of an absent key must fail with Precondition: {other:?}"),
    }
    Ok(())
}

/// Eight clients Create one key at once with 1 MiB bodies; returns how many
/// were told they won. A store whose check and write are one step lets
/// exactly one win; the object then holds the winner's body. A client whose
/// connection ended before an answer (a server may refuse early and hang
/// up) was told nothing: it is neither a winner nor a loser.
async fn racing_creates(store: &AmazonS3) -> anyhow::Result<usize> {
    let key = Path::from("race/lease");
    let bodies: Vec<Vec<u8>> = (0..8).map(|i| pseudo_random(1 << 20, 100 + i)).collect();
    let attempts = bodies
        .iter()
        .map(|body| store.put_opts(&key, PutPayload::from(body.clone()), PutMode::Create.into()));
    let results = futures_util::future::join_all(attempts).await;
    let (mut winners, mut unanswered) = (Vec::new(), Vec::new());
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(_) => winners.push(i),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) if e.to_string().contains("error sending request") => unanswered.push(i),
            Err(e) => bail!("racing Create {i}: {e}"),
        }
    }
    let stored = get_all(store, "race/lease").await?;
    let holder = bodies.iter().position(|b| b[..] == stored[..]);
    eprintln!(
        "racing creates: winners {winners:?}, cut off {unanswered:?}, object holds body {holder:?}"
    );
    ensure!(!winners.is_empty(), "no Create won");
    ensure!(
        holder.is_some_and(|h| winners.contains(&h) || unanswered.contains(&h)),
        "the object holds a loser's body"
    );
    Ok(winners.len())
}

/// Two Creates of one key, unsigned raw HTTP: the first sends its headers
/// and half its body, the second is sent whole and answered, then the first
/// sends the rest. Returns both status codes (first, second). A store that
/// checks `If-None-Match` only when the headers arrive lets both succeed,
/// and the object then holds the first one's body.
fn create_during_a_slow_create(target: &dyn S3Target, key: &str) -> anyhow::Result<(u16, u16)> {
    let addr = target.endpoint().trim_start_matches("http://").to_string();
    let head = format!(
        "PUT /{}/{key} HTTP/1.1\r\nHost: {addr}\r\nIf-None-Match: *\r\n\
         Content-Length: 8\r\nConnection: close\r\n\r\n",
        target.bucket()
    );
    let connect = || -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(40)))?;
        Ok(stream)
    };
    let status = |mut stream: TcpStream| -> anyhow::Result<u16> {
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("not an HTTP response: {text:.200}"))
    };
    let mut slow = connect()?;
    slow.write_all(head.as_bytes())?;
    slow.write_all(b"AAAA")?;
    std::thread::sleep(Duration::from_millis(300));
    let mut quick = connect()?;
    quick.write_all(head.as_bytes())?;
    quick.write_all(b"BBBBBBBB")?;
    let second = status(quick)?;
    slow.write_all(b"AAAA")?;
    let first = status(slow)?;
    Ok((first, second))
}

async fn start_s3s_fs() -> anyhow::Result<S3Server> {
    tokio::task::spawn_blocking(S3Server::start).await?
}

/// `None` (after a printed reason) where `weed` is not installed.
async fn start_seaweed() -> anyhow::Result<Option<SeaweedCluster>> {
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(SeaweedCluster::start).await??;
    if cluster.is_some() {
        eprintln!("SeaweedFS ready in {:?}", started.elapsed());
    }
    Ok(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_serves_put_get_ranges_list_delete() -> anyhow::Result<()> {
    let server = start_s3s_fs().await?;
    basic_operations(&s3::object_store(&server)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_completes_a_multipart_upload() -> anyhow::Result<()> {
    let server = start_s3s_fs().await?;
    multipart_upload(&s3::object_store(&server)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_honours_conditional_create_and_update() -> anyhow::Result<()> {
    let server = start_s3s_fs().await?;
    conditional_writes(&s3::object_store(&server)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_racing_creates() -> anyhow::Result<()> {
    let server = start_s3s_fs().await?;
    racing_creates(&s3::object_store(&server)?).await?;
    Ok(())
}

/// s3s-fs checks `If-None-Match: *` before it reads the body and writes
/// without a second check: a Create whose body is still arriving when
/// another Create of the key completes succeeds too and replaces it. Both
/// clients are told they created the key. (Sequential Creates are refused,
/// see above; eight concurrent 1 MiB Creates all succeeded in
/// `s3s_fs_racing_creates`.) A lease lock on s3s-fs is not exclusive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_create_is_not_atomic_against_a_slow_body() -> anyhow::Result<()> {
    let server = tokio::task::spawn_blocking(S3Server::start_anonymous).await??;
    let server = std::sync::Arc::new(server);
    let target = server.clone();
    let (first, second) =
        tokio::task::spawn_blocking(move || create_during_a_slow_create(&*target, "race/slow"))
            .await??;
    let content = std::fs::read(server.root().join(s3::BUCKET).join("race/slow"))?;
    ensure!(
        (first, second, &content[..]) == (200, 200, b"AAAAAAAA"),
        "s3s-fs changed: first Create {first}, second {second}, object {:?}",
        String::from_utf8_lossy(&content)
    );
    Ok(())
}

/// The key pair is checked: a client with a wrong secret is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_refuses_a_wrong_secret() -> anyhow::Result<()> {
    let server = start_s3s_fs().await?;
    let wrong = s3::object_store_builder(&server)
        .with_secret_access_key("not-the-secret")
        .build()?;
    match wrong
        .put(&Path::from("x"), PutPayload::from_static(b"x"))
        .await
    {
        Err(
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
        ) => Ok(()),
        other => bail!("a wrong secret must be refused: {other:?}"),
    }
}

/// SIGKILL and restart on the same root and port: what was PUT is there,
/// and a client built before the kill works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_killed_and_restarted_keeps_its_objects() -> anyhow::Result<()> {
    let mut server = start_s3s_fs().await?;
    let store = s3::object_store(&server)?;
    let before = server.endpoint();
    store
        .put(&Path::from("kept"), PutPayload::from_static(b"kept"))
        .await?;
    server.kill();
    let quick = s3::object_store_builder(&server)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()?;
    ensure!(
        quick.get(&Path::from("kept")).await.is_err(),
        "a killed server does not answer"
    );
    let server = tokio::task::spawn_blocking(move || server.restart().map(|()| server)).await??;
    ensure!(server.endpoint() == before, "restarted on another port");
    ensure!(
        get_all(&store, "kept").await? == "kept",
        "an object PUT before the kill"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_serves_put_get_ranges_list_delete() -> anyhow::Result<()> {
    let Some(cluster) = start_seaweed().await? else {
        return Ok(());
    };
    let result = basic_operations(&s3::object_store(&cluster)?).await;
    result.map_err(|e| e.context(cluster.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_completes_a_multipart_upload() -> anyhow::Result<()> {
    let Some(cluster) = start_seaweed().await? else {
        return Ok(());
    };
    multipart_upload(&s3::object_store(&cluster)?).await
}

/// Sequential Creates and Updates as on s3s-fs; and racing ones: of eight
/// concurrent Creates one won in every run so far, and a Create whose body
/// is still arriving is refused when another completes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_honours_conditional_create_and_update() -> anyhow::Result<()> {
    let Some(cluster) = start_seaweed().await? else {
        return Ok(());
    };
    let store = s3::object_store(&cluster)?;
    conditional_writes(&store).await?;
    racing_creates(&store).await?;
    let cluster = std::sync::Arc::new(cluster);
    let target = cluster.clone();
    let (first, second) =
        tokio::task::spawn_blocking(move || create_during_a_slow_create(&*target, "race/slow"))
            .await??;
    let content = get_all(&store, "race/slow").await?;
    // Unlike s3s-fs, SeaweedFS checks when the body is in: the slow Create
    // is refused and the completed one stays.
    ensure!(
        (first, second, &content[..]) == (412, 200, b"BBBBBBBB"),
        "SeaweedFS, a Create during a slow Create: first {first}, second {second}, object {:?}",
        String::from_utf8_lossy(&content)
    );
    Ok(())
}

/// One of two volume servers killed (replication 001: every volume is on
/// both): every object written before is read back whole and by range, and
/// listed; a new PUT does not succeed (the master cannot place a volume on
/// two servers, the gateway answers 500 after ~30 s), until the volume
/// server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_with_a_volume_server_killed_reads_but_does_not_write() -> anyhow::Result<()> {
    let Some(mut cluster) = start_seaweed().await? else {
        return Ok(());
    };
    let store = s3::object_store(&cluster)?;
    let mut written = Vec::new();
    for i in 0..12u64 {
        let len = if i % 3 == 0 {
            2 << 20
        } else {
            10_000 + i as usize * 1000
        };
        let body = pseudo_random(len, 200 + i);
        let key = format!("before/{i:02}");
        store
            .put(&Path::from(key.as_str()), PutPayload::from(body.clone()))
            .await?;
        written.push((key, body));
    }
    cluster.kill_volume(0);

    for (key, body) in &written {
        ensure!(
            get_all(&store, key).await? == body[..],
            "GET {key} after a volume kill"
        );
        let range = store
            .get_range(&Path::from(key.as_str()), 1000..2000)
            .await?;
        ensure!(
            range == body[1000..2000],
            "range GET {key} after a volume kill"
        );
    }
    ensure!(
        list_keys(&store, "before").await?.len() == written.len(),
        "LIST after a volume kill"
    );

    // No retries and a 5 s bound: the PUT is not acknowledged (it would
    // fail with HTTP 500 after ~30 s).
    let quick = s3::object_store_builder(&cluster)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(5)),
        )
        .build()?;
    let refused = quick
        .put(&Path::from("after/new"), PutPayload::from_static(b"new"))
        .await;
    ensure!(
        refused.is_err(),
        "a PUT with one of two replicas down succeeded"
    );
    eprintln!(
        "PUT with a volume server down: {}",
        refused.err().map(|e| e.to_string()).unwrap_or_default()
    );

    cluster.restart_volume(0)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match quick
            .put(&Path::from("after/new"), PutPayload::from_static(b"new"))
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow::Error::new(e).context("PUT after the volume server came back"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    ensure!(
        get_all(&store, "after/new").await? == "new",
        "PUT after the volume server came back"
    );
    Ok(())
}
