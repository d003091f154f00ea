//! The ways out: email over SMTP ([`email`]) and SMS through a provider ([`sms`]).
//! Every call has a timeout and sorts its failures into [`SendError`] kinds, which
//! decide between waiting out an outage, retrying and giving up.

pub mod email;
pub mod sms;

pub use crate::domain::SendError;
pub use email::Mailer;
pub use sms::SmsSender;
