//! The compiled-component cache: native code on disk, keyed by the component's content hash
//! and the engine's settings, so a second start compiles nothing.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded compiled code from disk.
    Hit,
    /// Compiled now, and stored for next time.
    Miss,
}

impl CacheOutcome {
    /// `hit` or `miss`, for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

/// A directory of compiled components. Only gantry writes it: entries are trusted native code.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, so the engine's settings hash is stable across runs.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

impl ComponentCache {
    /// Open (creating) the cache directory for components compiled by `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<ComponentCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache directory {}", dir.display()))?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(ComponentCache {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    fn entry(&self, wasm: &[u8]) -> PathBuf {
        let content = hex::encode(Sha256::digest(wasm));
        self.dir
            .join(format!("{content}-{}.cwasm", self.engine_key))
    }

    /// The compiled form of `wasm`: from disk if present and loadable, else compiled and stored.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, CacheOutcome)> {
        let path = self.entry(wasm);
        if path.exists() {
            // SAFETY: the file is native code gantry itself wrote into its own data directory
            // for this engine configuration; wasmtime still checks its header and version.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "cached component unusable, compiling again: {e}"
                ),
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .context("compiling component")?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Err(e) = std::fs::write(&tmp, &compiled).and_then(|()| std::fs::rename(&tmp, &path))
        {
            // A read-only or full disk costs a compile next time, nothing more.
            tracing::warn!(path = %path.display(), "could not store compiled component: {e}");
            let _ = std::fs::remove_file(&tmp);
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component =
            unsafe { Component::deserialize(engine, &compiled) }.map_err(anyhow::Error::from)?;
        Ok((component, CacheOutcome::Miss))
    }
}
