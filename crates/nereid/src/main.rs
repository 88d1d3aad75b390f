//! `nereid`: starts in place of `tritonserver` on an unchanged Triton model repository.

mod cli;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nereid_core::backend::Backend;
use nereid_core::model_repository_manager::{ControlMode, ModelRepositoryManager, RepositoryOptions};
use nereid_core::server::{InferenceServer, ServerOptions};
use tokio::sync::watch;

use cli::Cli;

/// Requests allocate on several threads at once; glibc's malloc serialises them on arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn backends() -> Vec<Arc<dyn Backend>> {
    #[allow(unused_mut)]
    let mut list: Vec<Arc<dyn Backend>> = Vec::new();
    #[cfg(feature = "onnxruntime")]
    list.push(nereid_onnxruntime::backend());
    #[cfg(feature = "python")]
    list.push(nereid_python::backend());
    list
}

fn configure_logging(cli: &Cli) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    nereid_core::logging::init();
    let s = nereid_core::logging::settings();
    s.info.store(cli.log_info, Relaxed);
    s.warning.store(cli.log_warning, Relaxed);
    s.error.store(cli.log_error, Relaxed);
    s.verbose_level.store(cli.log_verbose, Relaxed);
    s.set_format(cli.log_format);
    if let Some(path) = &cli.log_file {
        s.set_file(path).map_err(|e| format!("failed to open log file '{path}': {e}"))?;
    }
    Ok(())
}

/// The models to load at start, by control mode.
fn startup_models(cli: &Cli, repository: &ModelRepositoryManager) -> Vec<String> {
    let all = || repository.scan().into_keys().collect();
    match cli.model_control_mode {
        ControlMode::Explicit if cli.load_model.iter().any(|m| m == "*") => all(),
        ControlMode::Explicit => cli.load_model.clone(),
        _ => {
            if !cli.load_model.is_empty() {
                log::warn!("--load-model is only used with --model-control-mode=explicit");
            }
            all()
        }
    }
}

async fn bind(what: &str, address: &str, port: u16) -> Result<tokio::net::TcpListener, String> {
    let addr: SocketAddr = format!("{address}:{port}")
        .parse()
        .or_else(|_| format!("[{address}]:{port}").parse())
        .map_err(|_| format!("invalid {what} address '{address}'"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("failed to start {what} service at {addr}: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run(cli: Cli) -> Result<(), String> {
    if cli.model_repository.is_empty() {
        return Err("--model-repository must be specified".into());
    }
    if cli.exit_on_error {
        if let Some(missing) = cli.model_repository.iter().find(|p| !p.is_dir()) {
            return Err(format!("failed to stat file {}", missing.display()));
        }
    }
    let options = RepositoryOptions {
        repositories: cli.model_repository.clone(),
        config_name: cli.model_config_name.clone(),
        auto_complete: cli.auto_complete(),
        backend_config: cli.backend_config_map(),
        gpu_count: nereid_core::devices::gpu_count(),
    };
    let repository = Arc::new(ModelRepositoryManager::new(options, backends()));
    let models = startup_models(&cli, &repository);
    let failed = {
        let repository = repository.clone();
        tokio::task::spawn_blocking(move || !repository.load_all(&models)).await.map_err(|e| e.to_string())?
    };
    if failed && cli.exit_on_error {
        repository.unload_all();
        return Err("failed to load all models".into());
    }
    let server = InferenceServer::new(
        ServerOptions {
            id: cli.id.clone(),
            control_mode: cli.model_control_mode,
            strict_readiness: cli.strict_readiness,
            allow_client_shm: cli.allow_client_shm,
        },
        repository.clone(),
    )
    .into_shared();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut services = tokio::task::JoinSet::new();
    if cli.allow_grpc {
        let listener = bind("GRPC", &cli.grpc_address, cli.grpc_port).await?;
        log::info!("Started GRPCInferenceService at {}", listener.local_addr().map_err(|e| e.to_string())?);
        let (server, stop) = (server.clone(), stopped());
        services.spawn(
            async move { nereid_grpc::serve(server, listener, stop).await.map_err(|e| e.to_string()) },
        );
    }
    if cli.allow_http {
        let listener = bind("HTTP", &cli.http_address, cli.http_port).await?;
        log::info!("Started HTTPService at {}", listener.local_addr().map_err(|e| e.to_string())?);
        let (server, stop) = (server.clone(), stopped());
        services.spawn(
            async move { nereid_http::serve(server, listener, stop).await.map_err(|e| e.to_string()) },
        );
    }
    if cli.allow_metrics {
        let listener = bind("Metrics", &cli.metrics_address, cli.metrics_port).await?;
        log::info!("Started Metrics Service at {}", listener.local_addr().map_err(|e| e.to_string())?);
        let stop = stopped();
        services.spawn(
            async move { nereid_http::serve_metrics(listener, stop).await.map_err(|e| e.to_string()) },
        );
    }

    let polling = Arc::new(AtomicBool::new(cli.model_control_mode == ControlMode::Poll));
    if polling.load(Ordering::Relaxed) {
        let (repository, polling) = (repository.clone(), polling.clone());
        let period = Duration::from_secs(cli.repository_poll_secs.max(1));
        std::thread::spawn(move || {
            while polling.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                if polling.load(Ordering::Relaxed) {
                    repository.poll();
                }
            }
        });
    }

    tokio::select! {
        _ = shutdown_signal() => log::info!("Received a signal, stopping the server"),
        Some(r) = services.join_next() => {
            let _ = stop_tx.send(true);
            return Err(r.map_err(|e| e.to_string())?.err().unwrap_or_else(|| "a service stopped".into()));
        }
    }
    polling.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let timeout = Duration::from_secs(cli.exit_timeout_secs);
    if tokio::time::timeout(timeout, async { while services.join_next().await.is_some() {} }).await.is_err() {
        log::warn!("Timeout {}s: requests still in flight, exiting", cli.exit_timeout_secs);
    }
    tokio::task::spawn_blocking(move || repository.unload_all()).await.map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    if let Err(e) = configure_logging(&cli) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("error: creating server: {e}");
            ExitCode::from(1)
        }
    }
}
