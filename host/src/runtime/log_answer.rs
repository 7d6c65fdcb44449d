//! Answering with a log a handler handed to the host (`responses.stream-log`).
//!
//! The handler's instance is gone by now. The host waits for each batch of events outside any
//! instance, then shapes it in a fresh instance of the same plugin (its `log-shaper` export,
//! with the same limits as any call) and sends the bytes. Waiting holds a log reader, never an
//! instance slot: a tenant's hundred idle streams cost a hundred channel receivers, not a
//! hundred instances. A batch holds about 1 MiB of text, so shaping a log of any size and line
//! length stays inside the handler's memory cap.

use super::handler::CallFailure;
use super::host::log_shaping_bindings::LogShapingPre;
use super::host::{BoundCall, HandlerHost, HandlerState, LogHandoff, next_batch, wit_task};
use super::registry::PluginInstance;
use super::{Plugins, Services};
use crate::tenants::TenantId;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Events one shaping call gets at most (fewer when they are long).
const BATCH_EVENTS: u32 = 1000;
/// Wall-clock limit of one shaping call (its CPU budget is the plugin's, as for any call).
const SHAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// What answering a handed-over log needs: the plugins to shape with, the services the
/// shaping instance reaches, and whose log it is.
pub(crate) struct LogPump {
    pub(crate) plugins: Arc<Plugins>,
    pub(crate) services: Services,
    pub(crate) plugin: String,
    pub(crate) tenant: TenantId,
}

impl LogPump {
    /// Send the log until it ends, the shaper says done, or the client leaves. A failure is
    /// given to `report` while the body is still open, so the body ends as an error.
    pub(crate) async fn answer(
        self,
        handoff: LogHandoff,
        bound: BoundCall,
        report: &mut (dyn FnMut(&CallFailure) + Send),
    ) {
        let LogHandoff {
            mut log,
            mut state,
            body,
        } = handoff;
        // What the handler bound to its call (a prompt's run) lives as long as the answer.
        let _bound = bound;
        let task_id = log.reader.task_id().to_string();
        loop {
            let events = tokio::select! {
                batch = next_batch(&mut log.reader, BATCH_EVENTS) => batch,
                // The client is gone: stop reading.
                () = body.closed() => return,
            };
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(task = %task_id, "reading a log for an answer failed: {e}");
                    report(&CallFailure::Trap("the log could not be read".into()));
                    return;
                }
            };
            let end = if events.is_empty() {
                match self.services.tasks.get(&self.tenant, &task_id).await {
                    Ok(task) => Some(wit_task(task)),
                    Err(e) => {
                        tracing::error!(task = %task_id, "reading an ended task failed: {e}");
                        report(&CallFailure::Trap("the task could not be read".into()));
                        return;
                    }
                }
            } else {
                None
            };
            let ended = end.is_some();
            // Boxed: the shaping call (an instantiation) is large, and the answer's future,
            // which lives as long as the client follows, would otherwise hold its space.
            let shaped = match Box::pin(self.shape(&state, &events, end)).await {
                Ok(shaped) => shaped,
                Err(failure) => {
                    report(&failure);
                    return;
                }
            };
            if !shaped.bytes.is_empty() && body.send(Bytes::from(shaped.bytes)).await.is_err() {
                return;
            }
            if shaped.done || ended {
                return;
            }
            state = shaped.state;
        }
    }

    /// One batch through the plugin's `log-shaper`, in a fresh instance.
    async fn shape(
        &self,
        state: &str,
        events: &[super::host::bindings::gantry::plugin::tasks::Event],
        end: Option<super::host::bindings::gantry::plugin::tasks::Task>,
    ) -> Result<
        super::host::log_shaping_bindings::exports::gantry::plugin::log_shaper::Shaped,
        CallFailure,
    > {
        let Some(plugin) = self.plugins.plugin(&self.plugin) else {
            return Err(CallFailure::Trap(format!(
                "no plugin named {:?}",
                self.plugin
            )));
        };
        let PluginInstance::Handler { shaper, .. } = &plugin.instance else {
            return Err(CallFailure::Trap("not a handler".into()));
        };
        let Some(pre): Option<&LogShapingPre<HandlerState>> = shaper.as_ref() else {
            return Err(CallFailure::Trap(format!(
                "plugin {} answered with stream-log but does not export log-shaper",
                self.plugin
            )));
        };
        // Shaping waits for a slot within the tenant's share rather than fail the stream.
        let permit = self.plugins.capacity().handler_waiting(&self.tenant).await;
        let host = HandlerHost::new(
            self.services.clone(),
            self.plugins.node().clone(),
            self.plugins.capacity().clone(),
            // A shaper formats bytes: it acts for the tenant, and no user.
            &super::Caller::tenant(self.tenant.clone()),
        );
        let (mut store, _slot) = self.plugins.new_store(plugin, &self.tenant, host, permit);
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance
                .gantry_plugin_log_shaper()
                .call_shape(&mut store, state, events, end.as_ref())
                .await
        };
        let shaped = match tokio::time::timeout(SHAPE_TIMEOUT, call).await {
            Ok(result) => result.map_err(CallFailure::from_error)?,
            Err(_) => return Err(CallFailure::Timeout(SHAPE_TIMEOUT)),
        };
        // A shaping call may not hand over another log.
        if store.data_mut().host.take_handoff().is_some() {
            return Err(CallFailure::Trap(
                "log-shaper called responses.stream-log".into(),
            ));
        }
        Ok(shaped)
    }
}
