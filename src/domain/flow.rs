//! Flows and their steps: the state machine of the contract as pure functions.
//!
//! A VERIFY flow has the single step CONFIRM_NEW. A CHANGE flow starts at CONFIRM_CURRENT
//! (a link to the address of record), then CONFIRM_NEW (a link to the new address). After
//! its last step a flow's step is DONE. The database stores these as short strings.

stored_enum! {
    pub enum FlowKind {
        Verify = "verify",
        Change = "change",
    }
}

stored_enum! {
    pub enum FlowStep {
        ConfirmCurrent = "confirm_current",
        ConfirmNew = "confirm_new",
        Done = "done",
    }
}

stored_enum! {
    /// Where a flow stands. Only `Pending` flows have live tokens.
    pub enum FlowState {
        Pending = "pending",
        Completed = "completed",
        Cancelled = "cancelled",
        Superseded = "superseded",
    }
}

/// What a confirmation achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    EmailVerified,
    CurrentConfirmed,
    EmailChanged,
}

impl Outcome {
    /// The name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::EmailVerified => "email_verified",
            Outcome::CurrentConfirmed => "current_confirmed",
            Outcome::EmailChanged => "email_changed",
        }
    }
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
}
