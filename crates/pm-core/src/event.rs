//! The events a monitor publishes on `GET /events` (and hands to `onStateChange` hooks): one closed enum, one
//! variant per kind of change. The wire shapes are described in `docs/events-and-logs.md`.

use serde::{Deserialize, Serialize};

use crate::{ProcessState, Timestamp};

/// One event: an id (unique within a monitor run, ordered), its time and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `{epoch}-{sequence}`: the epoch is the monitor's start time in Unix milliseconds, the sequence counts up
    /// from 1 in that run. Empty until the event bus numbers it, and for the synthetic `gap` and `cut`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When the change happened.
    pub time: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event of `kind` happening now (not numbered yet).
    pub fn now(kind: EventKind) -> Event {
        Event { id: String::new(), time: Timestamp::now(), kind }
    }

    /// The process the event is about, if any.
    pub fn process_id(&self) -> Option<&str> {
        self.kind.process_id()
    }
}

/// What happened. Serialized with a `type` tag in camelCase (`state`, `restartScheduled`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum EventKind {
    /// A process changed state.
    State {
        /// The process.
        process_id: String,
        /// The state before.
        from: ProcessState,
        /// The state now.
        to: ProcessState,
        /// The PID of its child (the one that ended, for `crashed`, `stopped`, `failed`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        /// Why, in words: `started`, `adopted`, `requested`, `killed by signal 9`, `exited with code 3`, a check
        /// failure, `restart scheduled`, `restart attempts used up`, ...
        reason: String,
        /// Exit code of the run that ended (on a transition out of a running child).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Signal that ended the run (on a transition out of a running child).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// A restart after a crash is scheduled.
    RestartScheduled {
        /// The process.
        process_id: String,
        /// The attempt this restart will be (1 for the first after a crash).
        attempt: u32,
        /// The backoff delay before it.
        delay_ms: u64,
    },
    /// An aliveness or startup check failed.
    CheckFailed {
        /// The process.
        process_id: String,
        /// Failures in a row so far (startup checks count their attempts).
        consecutive_failures: u32,
    },
    /// An aliveness check passed after failures (or a startup check passed).
    CheckPassed {
        /// The process.
        process_id: String,
    },
    /// A process was registered (through the API or a local client).
    Registered {
        /// The process.
        process_id: String,
    },
    /// A process was deregistered.
    Deregistered {
        /// The process.
        process_id: String,
    },
    /// A process's configuration changed.
    ConfigChanged {
        /// The process.
        process_id: String,
        /// The wire names of the fields that changed (`enabled`, `autostart`, `args`, ...).
        fields: Vec<String>,
    },
    /// The partner monitor is running (started or adopted).
    PartnerUp {
        /// The partner's instance id.
        partner_instance_id: String,
        /// Its PID.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// The partner monitor stopped running.
    PartnerDown {
        /// The partner's instance id.
        partner_instance_id: String,
        /// Why, in words.
        reason: String,
    },
    /// This monitor is restarting itself (a replacement process takes over; the stream ends).
    MonitorRestart {},
    /// Standalone mode was turned on or off.
    StandaloneChanged {
        /// Whether standalone mode is now on.
        enabled: bool,
    },
    /// Events were missed: the `Last-Event-ID` given is older than the ring holds, or from an earlier monitor run.
    /// The stream goes on with the oldest event held.
    Gap {
        /// The `Last-Event-ID` the client sent.
        last_event_id: String,
        /// The id of the oldest event still held (the next one sent), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_available_id: Option<String>,
    },
    /// The last event of a stream the monitor ends: the client reads too slowly (reconnect with `Last-Event-ID`),
    /// or the monitor is shutting down.
    Cut {
        /// Why, in words.
        reason: String,
    },
}

impl EventKind {
    /// The wire name of the kind (the SSE `event:` field).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::State { .. } => "state",
            EventKind::RestartScheduled { .. } => "restartScheduled",
            EventKind::CheckFailed { .. } => "checkFailed",
            EventKind::CheckPassed { .. } => "checkPassed",
            EventKind::Registered { .. } => "registered",
            EventKind::Deregistered { .. } => "deregistered",
            EventKind::ConfigChanged { .. } => "configChanged",
            EventKind::PartnerUp { .. } => "partnerUp",
            EventKind::PartnerDown { .. } => "partnerDown",
            EventKind::MonitorRestart {} => "monitorRestart",
            EventKind::StandaloneChanged { .. } => "standaloneChanged",
            EventKind::Gap { .. } => "gap",
            EventKind::Cut { .. } => "cut",
        }
    }

    /// The process the event is about, if any.
    pub fn process_id(&self) -> Option<&str> {
        match self {
            EventKind::State { process_id, .. }
            | EventKind::RestartScheduled { process_id, .. }
            | EventKind::CheckFailed { process_id, .. }
            | EventKind::CheckPassed { process_id }
            | EventKind::Registered { process_id }
            | EventKind::Deregistered { process_id }
            | EventKind::ConfigChanged { process_id, .. } => Some(process_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: EventKind, expected: &str) {
        let event = Event { id: "1-2".to_owned(), time: Timestamp::now(), kind };
        let mut value = serde_json::to_value(&event).unwrap();
        value.as_object_mut().unwrap().shift_remove("time");
        assert_eq!(value.to_string(), expected);
        assert_eq!(value["type"], event.kind.name());
        let back: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!((back.id, back.kind), (event.id, event.kind));
    }

    #[test]
    fn wire_shapes() {
        check(
            EventKind::State {
                process_id: "api".to_owned(),
                from: ProcessState::Running,
                to: ProcessState::Crashed,
                pid: Some(7),
                reason: "killed by signal 9".to_owned(),
                exit_code: None,
                signal: Some(9),
            },
            r#"{"id":"1-2","type":"state","processId":"api","from":"running","to":"crashed","pid":7,"reason":"killed by signal 9","signal":9}"#,
        );
        check(
            EventKind::RestartScheduled { process_id: "api".to_owned(), attempt: 1, delay_ms: 0 },
            r#"{"id":"1-2","type":"restartScheduled","processId":"api","attempt":1,"delayMs":0}"#,
        );
        check(EventKind::MonitorRestart {}, r#"{"id":"1-2","type":"monitorRestart"}"#);
        check(
            EventKind::Gap { last_event_id: "0-5".to_owned(), first_available_id: Some("1-1".to_owned()) },
            r#"{"id":"1-2","type":"gap","lastEventId":"0-5","firstAvailableId":"1-1"}"#,
        );
    }
}
