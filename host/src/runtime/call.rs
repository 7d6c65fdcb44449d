//! Per-call state: the data of one `Store`, and the limits that end a misbehaving call.

use super::registry::PluginContext;
use crate::tenants::TenantId;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

/// The data of one call's `Store`: the WASI context, the resource table and the limits every
/// call has, the plugin and tenant it runs for, and `H`, what its world adds (nothing for a
/// backend adapter; the HTTP context and the core services for a handler).
pub struct CallState<H> {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    memory: MemoryCap,
    cpu: CpuMeter,
    /// The plugin being called.
    pub(crate) plugin: Arc<PluginContext>,
    /// The tenant this call acts for; every host call is scoped to it.
    pub(crate) tenant: TenantId,
    /// Settings this call sees in place of the plugin's own (a task's proxy `base_url`).
    pub(crate) setting_overrides: Vec<(String, String)>,
    /// What the plugin's world adds.
    pub(crate) host: H,
}

/// A backend adapter's call state: nothing beyond the common part.
pub type AdapterState = CallState<()>;

impl<H> fmt::Debug for CallState<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallState")
            .field("plugin", &self.plugin.name)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl<H> CallState<H> {
    /// Begin a new top-level call on a store that outlives one call: the CPU budget is per
    /// call.
    pub(crate) fn start_call(&mut self) {
        self.cpu.used = Duration::ZERO;
    }

    /// The plugin's own view: its name and settings (`log`, `config`).
    pub(crate) fn plugin_view(&self) -> super::host::PluginView<'_> {
        super::host::PluginView {
            plugin: &self.plugin,
            overrides: &self.setting_overrides,
        }
    }
}

impl<H: Send + 'static> WasiView for CallState<H> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState<super::host::HandlerHost> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.host.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// A fresh store for one call of `plugin`, with its memory cap, CPU deadline and stdio.
pub(crate) fn new_store<H: Send + 'static>(
    engine: &wasmtime::Engine,
    plugin: &Arc<PluginContext>,
    tenant: &TenantId,
    host: H,
) -> Store<CallState<H>> {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(GuestOutput::new(&plugin.name, "stdout"))
        .stderr(GuestOutput::new(&plugin.name, "stderr"));
    if plugin.network {
        wasi.inherit_network().allow_ip_name_lookup(true);
    }
    let state = CallState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        memory: MemoryCap {
            limit: usize::try_from(plugin.limits.memory_mb << 20).unwrap_or(usize::MAX),
        },
        cpu: CpuMeter::new(Duration::from_millis(plugin.limits.cpu_ms)),
        plugin: plugin.clone(),
        tenant: tenant.clone(),
        setting_overrides: Vec::new(),
        host,
    };
    store_around(engine, state)
}

/// A store around `state`, kept from an earlier store of the same plugin: a WebSocket
/// connection served by a fresh instance per call keeps its call state, not its instance.
/// The resource table and the CPU budget start afresh; the instance's memory is the new
/// store's.
pub(crate) fn store_around<H: Send + 'static>(
    engine: &wasmtime::Engine,
    mut state: CallState<H>,
) -> Store<CallState<H>> {
    state.table = ResourceTable::new();
    state.cpu.restart();
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    store.call_hook(|mut ctx, hook| {
        ctx.data_mut().cpu.on_hook(hook);
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let cpu = &mut ctx.data_mut().cpu;
        if cpu.spent() > cpu.budget {
            Err(wasmtime::Error::new(CallLimit::CpuDeadline(cpu.budget)))
        } else {
            // Yield each tick so one busy component cannot hold a worker thread; the wait
            // until the executor resumes the call is not the guest's CPU.
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(cpu.pause())))
        }
    });
    store
}

/// A limit that ended a call; the error a trap carries when the host stopped the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallLimit {
    /// The component ran longer than its CPU budget.
    CpuDeadline(Duration),
    /// The component tried to grow its memory past its cap (bytes).
    Memory(usize),
}

impl fmt::Display for CallLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallLimit::CpuDeadline(d) => {
                write!(
                    f,
                    "the component used more than its {} ms of CPU time",
                    d.as_millis()
                )
            }
            CallLimit::Memory(limit) => write!(
                f,
                "the component tried to grow its memory past its cap of {} MiB",
                limit >> 20
            ),
        }
    }
}

impl std::error::Error for CallLimit {}

/// The memory cap of one instance.
struct MemoryCap {
    limit: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            // Trap rather than return -1, so the answer can say it was the memory cap.
            return Err(wasmtime::Error::new(CallLimit::Memory(self.limit)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Time spent executing the guest's own code, excluding host calls and waiting: the time
/// in a host call, and after each yield at an epoch tick the time until the executor
/// resumes the call (on a busy node that can be long, and none of it is the guest's).
struct CpuMeter {
    budget: Duration,
    used: Duration,
    /// Since when the guest runs, while it does.
    entered: Option<Instant>,
    /// When the call resumed after its last yield, set by the yield's future (which has no
    /// access to the store); made at the first yield.
    resumed: Option<Arc<std::sync::Mutex<Option<Instant>>>>,
}

impl CpuMeter {
    fn new(budget: Duration) -> CpuMeter {
        CpuMeter {
            budget,
            used: Duration::ZERO,
            entered: None,
            resumed: None,
        }
    }

    /// The same budget, nothing used: for a call state kept for the next call.
    fn restart(&mut self) {
        *self = CpuMeter::new(self.budget);
    }

    fn on_hook(&mut self, hook: CallHook) {
        self.catch_up();
        if hook.exiting_host() {
            self.entered = Some(Instant::now());
        } else if let Some(since) = self.entered.take() {
            self.used += since.elapsed();
        }
    }

    fn spent(&mut self) -> Duration {
        self.catch_up();
        self.used + self.entered.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Stop counting: the call yields to the executor. The future yields, then counts again
    /// from when the executor polls it, which is when the guest resumes.
    fn pause(&mut self) -> impl Future<Output = ()> + Send + 'static {
        self.catch_up();
        if let Some(since) = self.entered.take() {
            self.used += since.elapsed();
        }
        let resumed = self.resumed.get_or_insert_with(Default::default).clone();
        async move {
            tokio::task::yield_now().await;
            *resumed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// The guest runs again since the time a yield's future recorded.
    #[inline]
    fn catch_up(&mut self) {
        let Some(resumed) = &self.resumed else {
            return;
        };
        if let Some(at) = resumed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.entered = Some(at);
        }
    }
}

/// A guest's stdout or stderr: each line goes to the host log under the plugin's name. Never
/// fails, so a chatty guest cannot trap itself by printing; overlong lines are cut.
#[derive(Clone)]
struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
}

impl GuestOutput {
    fn new(plugin: &Arc<str>, stream: &'static str) -> Self {
        GuestOutput {
            plugin: plugin.clone(),
            stream,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            out: self.clone(),
            line: Vec::new(),
        })
    }
}

const MAX_LOGGED_LINE: usize = 4096;

struct LineLogger {
    out: GuestOutput,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(plugin = %self.out.plugin, stream = self.out.stream, "{}", text.trim_end());
        self.line.clear();
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LOGGED_LINE {
                self.line.push(b);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_meter_counts_only_guest_time() {
        let mut m = CpuMeter::new(Duration::from_secs(1));
        m.on_hook(CallHook::CallingWasm);
        std::thread::sleep(Duration::from_millis(20));
        m.on_hook(CallHook::CallingHost);
        let in_guest = m.spent();
        assert!(in_guest >= Duration::from_millis(20));
        // Time in the host (waiting on I/O) is not counted.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(m.spent(), in_guest);
        m.on_hook(CallHook::ReturningFromHost);
        assert!(m.spent() >= in_guest);
    }

    /// A call that yields at an epoch tick is not charged for the time until the executor
    /// resumes it: on a loaded node that wait alone could exceed the budget.
    #[tokio::test]
    async fn cpu_meter_does_not_count_the_wait_after_a_yield() {
        let mut m = CpuMeter::new(Duration::from_secs(1));
        m.on_hook(CallHook::CallingWasm);
        std::thread::sleep(Duration::from_millis(5));
        let yielded = m.pause();
        let before = m.spent();
        assert!(before >= Duration::from_millis(5));
        // The executor is busy elsewhere for a while before it polls the call again.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(m.spent(), before, "nothing counts while the call waits");
        yielded.await;
        std::thread::sleep(Duration::from_millis(5));
        let after = m.spent();
        assert!(after >= before + Duration::from_millis(5), "{after:?}");
        assert!(after < before + Duration::from_millis(150), "{after:?}");
        // And the count goes on as before: into the host, out of it.
        m.on_hook(CallHook::CallingHost);
        let at_host = m.spent();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(m.spent(), at_host);
    }

    #[test]
    fn memory_cap_traps_with_its_reason() {
        let mut cap = MemoryCap { limit: 1 << 20 };
        assert!(cap.memory_growing(0, 1 << 20, None).unwrap());
        let err = cap.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<CallLimit>(),
            Some(&CallLimit::Memory(1 << 20))
        );
    }
}
