//! # msd-serve — a multi-student bundle over HTTP
//!
//! One process serves a bundle: every student stays resident, each behind its own bounded queue
//! and batcher thread ([`batcher`], admitting by the arithmetic of [`admission`]); the [`router`] sends each sample to the student that owns its
//! class, so every request costs one network evaluation per sample. [`server`] holds the axum
//! routes (generate, teacher comparison, bundle description, health, Prometheus [`metrics`], and
//! the web [`page`]); [`api`] parses and checks requests; [`render`] writes PNG and `.npy`
//! bodies; [`prompt`] serves free-text prompts of prompt-conditional bundles; [`noise`] draws each request's noise from its seed; [`bench`] measures throughput
//! over HTTP against the raw batched generator, and [`load`] makes the timed overload run.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let bundle = msd::bundle::Bundle::load("runs/demo/bundle.json".as_ref(), tch::Device::Cpu)?;
//! let server = msd_serve::Server::new(bundle, msd_serve::ServeConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.run(listener, msd_serve::server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod admission;
pub mod api;
pub mod batcher;
pub mod bench;
pub mod config;
pub mod conn;
pub mod info;
pub mod load;
pub mod memory;
pub mod metrics;
pub mod noise;
pub mod page;
pub mod prompt;
pub mod render;
pub mod router;
pub mod server;
pub mod teacher;

pub use config::ServeConfig;
pub use server::{ServeError, Server};
