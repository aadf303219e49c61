//! The `broker serve` process: opens storage, serves HTTP, runs maintenance, and
//! shuts down gracefully on SIGINT or SIGTERM (flushing logs and cursors and writing
//! the clean-shutdown markers).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::registry::{Broker, DataDirLock};

/// How long the cluster's tasks (gRPC server, membership) get to stop on shutdown.
const BACKGROUND_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client may take to send a request's headers, counted from the
/// connection's start or, on a kept-alive connection, from the previous answer:
/// an idle connection is closed after this long too.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a shutdown waits for the connections of requests under way.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The pause after an `accept` that failed for want of resources.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Open files a broker may need: several per partition and subscription.
const OPEN_FILES_WANTED: u64 = 1 << 20;

/// Runs the broker on an already bound listener until `shutdown` completes, then
/// closes storage cleanly. Tests bind port 0 and pass the listener in. A node of a
/// cluster binds its gRPC port and connects to ZooKeeper here.
pub async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BrokerError> {
    let local = local_addr(&listener)?;
    let link = match &broker.config.zookeeper {
        Some(hosts) => Some(ClusterLink::connect(&broker.config, hosts, local).await?),
        None => None,
    };
    run_linked(listener, link, broker, shutdown).await
}

/// [`run`] with the cluster's port already bound and ZooKeeper connected (when the
/// node is in a cluster).
async fn run_linked(
    listener: TcpListener,
    link: Option<ClusterLink>,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BrokerError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(Arc::clone(&broker).run_maintenance(stop_rx.clone()));
    let flusher = tokio::spawn(Arc::clone(&broker).run_flusher(stop_rx.clone()));
    let local = local_addr(&listener)?;
    let mut background = Vec::new();
    let app = match link {
        // The address clients reach, as bound (the configured port may be 0).
        None => crate::http::router_with(
            Arc::clone(&broker),
            crate::http::ClusterView::standalone(local),
        ),
        Some(link) => {
            let (app, tasks) = join_cluster(&broker, link, local, stop_rx.clone());
            background = tasks;
            app
        }
    };
    tracing::info!(%local, "serving REST");
    let stopping = Arc::clone(&broker);
    let shutdown = async move {
        shutdown.await;
        stopping.begin_shutdown();
    };
    serve_http(listener, app, shutdown, HttpLimits::DEFAULT).await;
    let _ = stop_tx.send(true);
    let _ = maintenance.await;
    let _ = flusher.await;
    for mut task in background {
        // Bounded: a peer that keeps a stream open must not hold the shutdown.
        if tokio::time::timeout(BACKGROUND_STOP_TIMEOUT, &mut task)
            .await
            .is_err()
        {
            tracing::warn!("a cluster task did not stop in time; aborting it");
            task.abort();
        }
    }
    let closing = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| BrokerError::Config(format!("shutdown task failed: {e}")))??;
    tracing::info!("storage closed cleanly");
    Ok(())
}

/// The time limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
struct HttpLimits {
    /// How long a client may take to send a request's headers.
    header_read_timeout: std::time::Duration,
    /// How long a shutdown waits for the connections of requests under way.
    shutdown_grace: std::time::Duration,
}

impl HttpLimits {
    const DEFAULT: HttpLimits = HttpLimits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        shutdown_grace: SHUTDOWN_GRACE,
    };
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting,
/// lets the requests under way finish (for at most `shutdown_grace`) and returns.
/// A client has `header_read_timeout` to send a request's headers (waiting for the
/// next request on a kept-alive connection counts too), so connections that send
/// nothing, or send a byte at a time, are closed rather than kept until the
/// descriptors run out; the body's own deadline is [`crate::http::BODY_READ_TIMEOUT`].
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: HttpLimits,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        // Answers go out at once, not held back waiting for the peer's
        // acknowledgement.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "connections still open when the shutdown's grace ran out (requests not sent in full); closing them"
        );
    }
}

/// After a failed `accept`: a connection that failed before it was taken is
/// skipped; anything else (out of descriptors, say) is logged and the loop pauses a
/// moment instead of spinning on the error.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// The address a listener is bound to.
fn local_addr(listener: &TcpListener) -> Result<std::net::SocketAddr, BrokerError> {
    listener
        .local_addr()
        .map_err(|e| BrokerError::io("listener", e))
}

/// What a node of a cluster binds and connects to before it opens storage: its
/// gRPC listener and its ZooKeeper session.
struct ClusterLink {
    /// ZooKeeper's `host:port[,...]`, for logs.
    hosts: String,
    /// The node's id, required in a cluster.
    node_id: u32,
    /// Replication and forwarding from the other nodes.
    grpc: TcpListener,
    /// The address `grpc` is bound to.
    grpc_local: std::net::SocketAddr,
    /// The connected ZooKeeper session.
    coord: Arc<crate::cluster::zk::ZkCoordination>,
}

impl ClusterLink {
    /// Binds the gRPC listen address (by default the REST port `rest` plus 1000)
    /// and connects to ZooKeeper at `hosts`.
    async fn connect(
        config: &BrokerConfig,
        hosts: &str,
        rest: std::net::SocketAddr,
    ) -> Result<ClusterLink, BrokerError> {
        let node_id = config
            .node_id
            .ok_or_else(|| BrokerError::Config("a node in a cluster needs a node_id".into()))?;
        let grpc_listen = config.grpc_listen.unwrap_or_else(|| {
            let mut addr = rest;
            addr.set_port(rest.port().wrapping_add(1000));
            addr
        });
        let grpc = TcpListener::bind(grpc_listen)
            .await
            .map_err(|e| BrokerError::io(format!("gRPC listen address {grpc_listen}"), e))?;
        let grpc_local = local_addr(&grpc)?;
        let session_timeout = session_timeout(config);
        let coord = crate::cluster::zk::ZkCoordination::connect(
            hosts,
            &config.zookeeper_chroot,
            session_timeout,
        )
        .await
        .map_err(|e| BrokerError::Config(format!("cannot join the cluster at {hosts}: {e}")))?;
        Ok(ClusterLink {
            hosts: hosts.to_owned(),
            node_id,
            grpc,
            grpc_local,
            coord,
        })
    }
}

fn session_timeout(config: &BrokerConfig) -> std::time::Duration {
    std::time::Duration::from_millis(config.zookeeper_session_timeout_ms)
}

/// Joins the cluster over `link`: serves gRPC (replication and forwarding) and
/// runs the node's membership loop until `stop`. Returns the REST router, with
/// the cluster's routing, and the background tasks.
fn join_cluster(
    broker: &Arc<Broker>,
    link: ClusterLink,
    rest: std::net::SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (axum::Router, Vec<tokio::task::JoinHandle<()>>) {
    use crate::cluster::{dead_letters, forward, node, replication_service};
    let config = &broker.config;
    let ClusterLink {
        hosts,
        node_id,
        grpc,
        grpc_local,
        coord,
    } = link;
    let node_config = node::NodeConfig {
        node_id,
        rest_addr: config
            .advertised_rest_addr
            .clone()
            .unwrap_or_else(|| rest.to_string()),
        grpc_addr: config
            .advertised_grpc_addr
            .clone()
            .unwrap_or_else(|| grpc_local.to_string()),
        leader: crate::replication::LeaderConfig {
            replica_lag_time_max_ms: config.replica_lag_time_max_ms,
            min_insync_replicas: usize::try_from(config.min_insync_replicas).unwrap_or(usize::MAX),
        },
        session_timeout: session_timeout(config),
        leader_rebalance_delay: (config.leader_rebalance_delay_ms > 0)
            .then(|| std::time::Duration::from_millis(config.leader_rebalance_delay_ms)),
    };
    let node = Arc::new(node::ClusterNode::new(
        node_config,
        coord,
        Arc::clone(broker),
    ));
    let app = crate::http::router_with(
        Arc::clone(broker),
        crate::http::ClusterView::clustered(Arc::clone(&node)),
    );
    let routes = forward::grpc_routes(forward::ForwardService::new(
        app.clone(),
        config.max_body_bytes,
    ))
    .add_service(proto::v1::replication_server::ReplicationServer::new(
        replication_service::ReplicationService::new(Arc::clone(&node)),
    ))
    .add_service(dead_letters::DeadLetterService::new(Arc::clone(&node)).into_server());
    let mut grpc_stop = stop.clone();
    let grpc_task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        };
        if let Err(error) = forward::serve_grpc(grpc, routes, shutdown).await {
            tracing::error!(%error, "the gRPC server stopped");
        }
    });
    tracing::info!(node = node_id, grpc = %grpc_local, zookeeper = %hosts, "joining the cluster");
    let node_task = tokio::spawn(node.run(stop));
    (app, vec![grpc_task, node_task])
}

/// `broker serve`: takes the data directory's lock, binds the listen address (and,
/// in a cluster, the gRPC address and the ZooKeeper session), then opens storage,
/// prints the first admin password if it made one, and serves until SIGINT or
/// SIGTERM. What can fail comes before the first admin is made: its password is
/// shown only once, by a start that goes on to serve.
pub async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    raise_open_files_limit();
    let data_dir = config.data_dir.clone();
    let lock = tokio::task::spawn_blocking(move || DataDirLock::take(&data_dir)).await??;
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr()?;
    let link = match &config.zookeeper {
        Some(hosts) => Some(ClusterLink::connect(&config, hosts, local).await?),
        None => None,
    };
    let (broker, bootstrap) =
        tokio::task::spawn_blocking(move || Broker::open_locked(config, lock)).await??;
    if let Some(password) = bootstrap.created_admin_password {
        println!(
            "Created user `admin` with password: {password}\n\
             It is shown only this once; change it with `broker user passwd admin`."
        );
    }
    println!("broker listening on http://{local}");
    run_linked(listener, link, Arc::new(broker), shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the broker");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}

/// Raises the limit of open files: each partition keeps two files open, and
/// thousands of topics are normal. The soft limit goes up to the hard one; a process
/// allowed to (root) raises the hard limit too, up to the kernel's `nr_open`.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let kernel_max = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(limit.rlim_max);
    let wanted = OPEN_FILES_WANTED.min(kernel_max);
    if limit.rlim_max < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        // SAFETY: as above; fails harmlessly without the privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
    }
    let wanted = wanted.min(limit.rlim_max);
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!("could not raise the open files limit");
        }
    }
    tracing::debug!(limit = limit.rlim_cur, "open files limit");
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const QUICK: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        shutdown_grace: Duration::from_millis(300),
    };

    /// A server of one route on a loopback port; dropping the sender shuts it down.
    async fn start() -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route("/echo", axum::routing::post(|body: String| async { body }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http(
            listener,
            app,
            async move {
                let _ = stopped.await;
            },
            QUICK,
        ));
        (addr, stop, server)
    }

    async fn get_ok(addr: std::net::SocketAddr) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// Reads until the server closes the connection; how long that took.
    async fn until_closed(tcp: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server kept the connection open for 10 s"),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_does_not_finish_its_headers_is_disconnected() {
        let (addr, _stop, _server) = start().await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /ok HTTP/1.1\r\nhost:").await.unwrap();
        assert!(
            get_ok(addr).await.ends_with("ok"),
            "others are served meanwhile"
        );
        assert!(until_closed(&mut half).await < Duration::from_secs(5));
        assert!(until_closed(&mut silent).await < Duration::from_secs(5));
        assert!(get_ok(addr).await.ends_with("ok"));
    }

    #[tokio::test]
    async fn a_shutdown_does_not_wait_for_a_request_that_is_never_sent_in_full() {
        let (addr, stop, server) = start().await;
        let mut half = TcpStream::connect(addr).await.unwrap();
        // Its handler waits for the rest of the body.
        half.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops within its grace")
            .unwrap();
    }
}
