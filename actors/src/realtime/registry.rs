//! `SessionRegistry`: which sockets each user holds (two phones, several browser tabs), so an
//! event for a person reaches every screen they have open.

use std::collections::HashMap;

use actix::prelude::*;

use super::frame::{Deliver, Frame, SessionId, deliver};
use super::metrics::METRICS;
use super::protocol::ServerMessage;
use crate::ids::UserId;

/// One open socket: its session, its role (the label of the connection gauge), its inbox.
type Socket = (SessionId, &'static str, Recipient<Deliver>);

#[derive(Default)]
pub struct SessionRegistry {
    by_user: HashMap<UserId, Vec<Socket>>,
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterSession {
    pub user: UserId,
    pub session: SessionId,
    pub role: &'static str,
    pub recipient: Recipient<Deliver>,
}

impl Handler<RegisterSession> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: RegisterSession, _: &mut Context<Self>) {
        METRICS.connections.with_label_values(&[msg.role]).inc();
        self.by_user
            .entry(msg.user)
            .or_default()
            .push((msg.session, msg.role, msg.recipient));
    }
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UnregisterSession {
    pub user: UserId,
    pub session: SessionId,
}

impl Handler<UnregisterSession> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: UnregisterSession, _: &mut Context<Self>) {
        if let Some(sessions) = self.by_user.get_mut(&msg.user) {
            if let Some(at) = sessions.iter().position(|(id, ..)| *id == msg.session) {
                let (_, role, _) = sessions.swap_remove(at);
                METRICS.connections.with_label_values(&[role]).dec();
            }
            if sessions.is_empty() {
                self.by_user.remove(&msg.user);
            }
        }
    }
}

/// Command: send a status frame to every socket of a user.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PushToUser {
    pub user: UserId,
    pub name: &'static str,
    pub frame: Frame,
}

impl PushToUser {
    /// `message` for every socket of `user`, serialized once.
    pub fn message(user: UserId, name: &'static str, message: &ServerMessage<'_>) -> Self {
        Self {
            user,
            name,
            frame: Frame::json(message),
        }
    }
}

impl Handler<PushToUser> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: PushToUser, _: &mut Context<Self>) {
        if let Some(sessions) = self.by_user.get(&msg.user) {
            let message = Deliver::status(msg.name, msg.frame);
            for (.., recipient) in sessions {
                deliver(recipient, message.clone());
            }
        }
    }
}

/// Query: does `0` have an open socket on this engine?
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct IsConnected(pub UserId);

impl Handler<IsConnected> for SessionRegistry {
    type Result = bool;

    fn handle(&mut self, IsConnected(user): IsConnected, _: &mut Context<Self>) -> bool {
        self.by_user.contains_key(&user)
    }
}
