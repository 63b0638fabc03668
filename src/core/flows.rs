//! The steps every use-case shares: start a flow, send a step's link, supersede or end a
//! flow, find a token's owner, and show a flow to callers. All run inside the caller's
//! transaction and write nothing on their own.

use crate::clock::duration_ms;
use crate::domain::email::mask;
use crate::domain::token::generate_code;
use crate::domain::{
    EmailAddress, EventType, FlowId, FlowKind, FlowState, FlowStep, Locale, MailId, MailParams,
    Secrets, Template, Token, UserId,
};
use crate::error::{CoreError, CoreResult};
use crate::store::entity::{flow, token};
use crate::store::{NewMail, NewToken, Tx};

use super::delivery::masks_of;
use super::{Core, FlowView};

/// What a new flow is for: RequestVerification's or RequestChange's input, checked.
pub(super) struct FlowRequest<'a> {
    pub user: &'a UserId,
    pub kind: FlowKind,
    pub new_email: &'a EmailAddress,
    /// The address of record a change starts from (None for a sign-up).
    pub old_email: Option<&'a EmailAddress>,
    pub locale: Option<Locale>,
}

impl Core {
    /// The start of every flow (RequestVerification, RequestChange), after the caller's
    /// own checks: EMAIL_TAKEN; a retry of the same pending request returns that flow
    /// and sends nothing; any other pending flow is superseded; then the new flow, its
    /// first link and its event. A sign-up also records the address, unverified.
    pub(super) async fn start_flow(
        &self,
        tx: &Tx,
        request: FlowRequest<'_>,
        now: i64,
    ) -> CoreResult<FlowView> {
        let FlowRequest {
            user,
            kind,
            new_email,
            old_email,
            locale,
        } = request;
        // One read: who has the inbox verified, the user's pending flow, and whether the
        // inbox — or, for a change, the current one its first link goes to — is suppressed.
        let read = tx.request_read(user, new_email, old_email, now).await?;
        if read.verified_owner.is_some_and(|owner| owner != *user) {
            return Err(CoreError::EmailTaken);
        }
        // No link goes to a suppressed inbox (a retry is told too).
        if let Some(s) = read.suppression {
            return Err(super::suppression::undeliverable(s));
        }
        let pending = read.pending;
        if let Some(p) = &pending
            && p.kind == kind
            && p.new_email == new_email.as_str()
            && p.expires_at > now
        {
            // A retry of the same request: same flow, no second email.
            let mail = tx.link_mail(&p.id()).await?;
            return Ok(self.delivered_view(p, mail.as_ref()));
        }
        if let Some(p) = pending {
            self.supersede(tx, &p, now).await?;
        }
        let (event, masked) = match kind {
            FlowKind::Verify => {
                tx.set_unverified_email(user, new_email, now).await?;
                (EventType::VerificationRequested, new_email.masked())
            }
            FlowKind::Change => (
                EventType::ChangeRequested,
                mask(old_email.map_or("", EmailAddress::as_str)),
            ),
        };
        let mut f = new_flow(user, kind, new_email, old_email, locale, now);
        // The link first, so the flow row is written once, complete.
        self.send_link(tx, &mut f, kind.first_step(), now).await?;
        tx.insert_flow(f.clone()).await?;
        tx.on_commit(move || crate::metrics::flow_requested(kind.as_str()));
        self.flow_event(tx, &f, event, &masked, "", now).await?;
        Ok(self.view(&f))
    }

    /// Issues a new token for `step`, queues its mail and sets the flow's link times.
    /// The recipient's limit applies to every link mail, whoever asks, per inbox: all the
    /// spellings of one address (its mailbox key) share one bucket.
    pub(super) async fn send_link(
        &self,
        tx: &Tx,
        f: &mut flow::Model,
        step: FlowStep,
        now: i64,
    ) -> CoreResult<()> {
        let recipient = EmailAddress::from_trusted(recipient_of(f, step).to_owned());
        self.take_recipient_limit(tx, &recipient.mailbox_key(), now)
            .await?;
        let ttl = match f.kind {
            FlowKind::Verify => self.policy.verify_ttl,
            FlowKind::Change => self.policy.change_ttl,
        };
        let token = Token::generate();
        let code = generate_code();
        let expires_at = now + duration_ms(ttl);
        let digest = self.keys.sign(&token);
        let flow_id = f.id();
        tx.insert_token(NewToken {
            digest: &digest,
            flow_id: &flow_id,
            step,
            expires_at,
            code_digest: &self.keys.code_digest(&digest.0, &code),
            now,
        })
        .await?;
        f.step = step;
        f.expires_at = expires_at;
        f.resend_available_at = now + duration_ms(self.policy.resend_cooldown);
        // A new code starts with a full count (a lock in force still holds it back until
        // the lock ends; `codes`).
        f.failed_codes = 0;
        f.updated_at = now;

        let template = match (f.kind, step) {
            (FlowKind::Change, FlowStep::ConfirmCurrent) => Template::ChangeCurrentLink,
            (FlowKind::Change, _) => Template::ChangeNewLink,
            (FlowKind::Verify, _) => Template::VerifyLink,
        };
        let mail_id = MailId::generate();
        let secrets = Secrets {
            link: format!("{}/verify?token={}", self.policy.public_url, token.expose()),
            code,
        };
        let sealed = serde_json::to_vec(&secrets).map_err(|e| CoreError::Internal(e.into()))?;
        let (masked_old, masked_new) = masks_of(&self.keys, f);
        let params = MailParams {
            expires_at,
            ttl_secs: ttl.as_secs(),
            masked_new,
            masked_old,
            changed_at: None,
            support: String::new(),
        };
        tx.enqueue_mail(NewMail {
            sealed_link: Some(self.keys.seal(&sealed, mail_id.as_str().as_bytes())),
            mail_id,
            user_id: &f.user(),
            flow_id: Some(&flow_id),
            template,
            recipient: &recipient,
            locale: Locale::requested(&f.locale),
            params: params_json(&params)?,
            now,
        })
        .await
    }

    /// A completed change tells the OLD address what happened (no link: nothing to click).
    pub(super) async fn send_change_notice(
        &self,
        tx: &Tx,
        f: &flow::Model,
        now: i64,
    ) -> CoreResult<()> {
        let Some(old) = f.old_email.clone().map(EmailAddress::from_trusted) else {
            return Ok(());
        };
        let (masked_old, masked_new) = masks_of(&self.keys, f);
        let params = MailParams {
            expires_at: 0,
            ttl_secs: 0,
            masked_new,
            masked_old,
            changed_at: Some(now),
            support: self.policy.support_contact.clone(),
        };
        tx.enqueue_mail(NewMail {
            mail_id: MailId::generate(),
            user_id: &f.user(),
            flow_id: Some(&f.id()),
            template: Template::ChangeNotice,
            recipient: &old,
            locale: Locale::requested(&f.locale),
            params: params_json(&params)?,
            sealed_link: None,
            now,
        })
        .await
    }

    /// A newer request replaces the pending flow `f`.
    async fn supersede(&self, tx: &Tx, f: &flow::Model, now: i64) -> CoreResult<()> {
        self.end_flow(tx, f, FlowState::Superseded, now).await?;
        self.flow_event(tx, f, EventType::FlowSuperseded, "", "", now)
            .await
    }

    /// Ends a flow in `state`; its tokens stop working.
    pub(super) async fn end_flow(
        &self,
        tx: &Tx,
        f: &flow::Model,
        state: FlowState,
        now: i64,
    ) -> CoreResult<()> {
        tx.supersede_tokens(&f.id()).await?;
        let mut ended = f.clone();
        ended.state = state;
        ended.updated_at = now;
        tx.update_flow(&ended).await
    }

    /// The user's row locked and their pending flow; NO_PENDING_FLOW for an unknown user
    /// as for a known one with nothing pending (the answer must not tell them apart).
    pub(super) async fn lock_pending(&self, tx: &Tx, user: &UserId) -> CoreResult<flow::Model> {
        tx.lock_user_pending_flow(user)
            .await?
            .map(|(_, pending)| pending)
            .ok_or(CoreError::NoPendingFlow)
    }

    /// For the link pages' buttons: the token (in any state) and its user, whose row is
    /// then locked, in a new transaction.
    pub(super) async fn lock_token_owner(
        &self,
        token: &Token,
    ) -> CoreResult<(Tx, UserId, token::Model)> {
        let tx = self.store.begin().await?;
        let (tok, f) = tx
            .token_with_flow(&self.keys.candidates(token))
            .await?
            .ok_or(CoreError::TokenNotFound)?;
        let user = f.user();
        tx.lock_user(&user).await?;
        Ok((tx, user, tok))
    }

    /// The token's flow, read again under the user's lock, if it is still pending.
    pub(super) async fn pending_flow_of(
        &self,
        tx: &Tx,
        tok: &token::Model,
    ) -> CoreResult<flow::Model> {
        let f = tx
            .flow(&FlowId::from_trusted(tok.flow_id.clone()))
            .await?
            .ok_or(CoreError::TokenNotFound)?;
        if f.state != FlowState::Pending {
            return Err(CoreError::NoPendingFlow);
        }
        Ok(f)
    }
}

fn new_flow(
    user: &UserId,
    kind: FlowKind,
    new_email: &EmailAddress,
    old_email: Option<&EmailAddress>,
    locale: Option<Locale>,
    now: i64,
) -> flow::Model {
    flow::Model {
        flow_id: FlowId::generate().into_string(),
        user_id: user.as_str().to_owned(),
        kind,
        step: kind.first_step(),
        state: FlowState::Pending,
        new_email: new_email.as_str().to_owned(),
        old_email: old_email.map(|e| e.as_str().to_owned()),
        locale: Locale::stored(locale).to_owned(),
        expires_at: now,
        resend_available_at: now,
        created_at: now,
        updated_at: now,
        failed_codes: 0,
        locked_until: None,
    }
}

/// Where a step's link goes: the current address for CONFIRM_CURRENT, else the new one.
pub(super) fn recipient_of(f: &flow::Model, step: FlowStep) -> &str {
    match step {
        FlowStep::ConfirmCurrent => f.old_email.as_deref().unwrap_or(&f.new_email),
        FlowStep::ConfirmNew | FlowStep::Done => &f.new_email,
    }
}

fn params_json(params: &MailParams) -> CoreResult<String> {
    serde_json::to_string(params).map_err(|e| CoreError::Internal(e.into()))
}
