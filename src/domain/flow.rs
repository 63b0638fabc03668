//! Flows and their steps: the state machine of the contract as pure functions.
//!
//! A VERIFY flow has the single step CONFIRM_NEW. A CHANGE flow starts at CONFIRM_CURRENT
//! (a link to the address of record), then CONFIRM_NEW (a link to the new address). After
//! its last step a flow's step is DONE. The database stores these as short strings.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    Verify,
    Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStep {
    ConfirmCurrent,
    ConfirmNew,
    Done,
}

/// Where a flow stands. Only `Pending` flows have live tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    Pending,
    Completed,
    Cancelled,
    Superseded,
}

/// What a confirmation achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    EmailVerified,
    CurrentConfirmed,
    EmailChanged,
}

impl FlowKind {
    pub fn first_step(self) -> FlowStep {
        match self {
            FlowKind::Verify => FlowStep::ConfirmNew,
            FlowKind::Change => FlowStep::ConfirmCurrent,
        }
    }

    /// The step after a confirmation of `step`, and what that confirmation means.
    pub fn advance(self, step: FlowStep) -> Option<(FlowStep, Outcome)> {
        match (self, step) {
            (FlowKind::Verify, FlowStep::ConfirmNew) => {
                Some((FlowStep::Done, Outcome::EmailVerified))
            }
            (FlowKind::Change, FlowStep::ConfirmCurrent) => {
                Some((FlowStep::ConfirmNew, Outcome::CurrentConfirmed))
            }
            (FlowKind::Change, FlowStep::ConfirmNew) => {
                Some((FlowStep::Done, Outcome::EmailChanged))
            }
            // A verify flow never has a CONFIRM_CURRENT step, and DONE is final.
            (FlowKind::Verify, FlowStep::ConfirmCurrent) | (_, FlowStep::Done) => None,
        }
    }
}

macro_rules! string_codec {
    ($ty:ty { $($variant:path => $s:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $s),+ }
            }
            pub fn from_db(s: &str) -> Option<Self> {
                match s { $($s => Some($variant),)+ _ => None }
            }
        }
    };
}

string_codec!(FlowKind { FlowKind::Verify => "verify", FlowKind::Change => "change" });
string_codec!(FlowStep {
    FlowStep::ConfirmCurrent => "confirm_current",
    FlowStep::ConfirmNew => "confirm_new",
    FlowStep::Done => "done",
});
string_codec!(FlowState {
    FlowState::Pending => "pending",
    FlowState::Completed => "completed",
    FlowState::Cancelled => "cancelled",
    FlowState::Superseded => "superseded",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_flow_is_one_step() {
        assert_eq!(FlowKind::Verify.first_step(), FlowStep::ConfirmNew);
        assert_eq!(
            FlowKind::Verify.advance(FlowStep::ConfirmNew),
            Some((FlowStep::Done, Outcome::EmailVerified))
        );
        assert_eq!(FlowKind::Verify.advance(FlowStep::ConfirmCurrent), None);
    }

    #[test]
    fn a_change_confirms_the_current_address_then_the_new_one() {
        assert_eq!(FlowKind::Change.first_step(), FlowStep::ConfirmCurrent);
        assert_eq!(
            FlowKind::Change.advance(FlowStep::ConfirmCurrent),
            Some((FlowStep::ConfirmNew, Outcome::CurrentConfirmed))
        );
        assert_eq!(
            FlowKind::Change.advance(FlowStep::ConfirmNew),
            Some((FlowStep::Done, Outcome::EmailChanged))
        );
        assert_eq!(FlowKind::Change.advance(FlowStep::Done), None);
    }

    #[test]
    fn database_strings_round_trip() {
        for k in [FlowKind::Verify, FlowKind::Change] {
            assert_eq!(FlowKind::from_db(k.as_str()), Some(k));
        }
        for s in [
            FlowStep::ConfirmCurrent,
            FlowStep::ConfirmNew,
            FlowStep::Done,
        ] {
            assert_eq!(FlowStep::from_db(s.as_str()), Some(s));
        }
        for s in [
            FlowState::Pending,
            FlowState::Completed,
            FlowState::Cancelled,
            FlowState::Superseded,
        ] {
            assert_eq!(FlowState::from_db(s.as_str()), Some(s));
        }
        assert_eq!(FlowKind::from_db("nope"), None);
    }
}
