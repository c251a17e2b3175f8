//! sd_notify(3) for lbd's `Type=notify` unit (packaging/systemd): READY=1, RELOADING=1 and
//! READY=1 around a reload, STOPPING=1. A leaf: `app` and `app::context` call it.

/// Tells systemd where lbd is (sd_notify(3); the `Type=notify` unit in packaging/systemd):
/// READY=1 once it serves, RELOADING=1 and READY=1 around a reload, STOPPING=1 at shutdown.
/// A no-op when $NOTIFY_SOCKET is unset (lbd not started by systemd); a failure to send is
/// logged at debug level and changes nothing else.
pub(crate) fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// RELOADING=1 with the MONOTONIC_USEC systemd asks a reload notification to carry.
pub(crate) fn reloading() -> Vec<sd_notify::NotifyState<'static>> {
    let mut v = vec![sd_notify::NotifyState::Reloading];
    if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
        v.push(t);
    }
    v
}
