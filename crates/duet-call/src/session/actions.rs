//! Carrying out the [`Negotiator`](crate::negotiation::Negotiator)'s actions
//! on the peer connection and the signaling client: making and closing
//! connections, offers and answers, candidates, and pointing the media
//! writers at the current connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use webrtc::peer_connection::RTCSessionDescription;

use super::{CallEvent, CurrentPeer, Session};
use crate::CallError;
use crate::chat::open_chat_channel;
use crate::media::{Outbound, run_sender_feedback};
use crate::negotiation::{Generation, NegotiationAction, NegotiationEvent};
use crate::peer::{
    H264_FMTP, H264_PAYLOAD_TYPE, MIME_TYPE_H264, MIME_TYPE_OPUS, OPUS_FMTP, OPUS_PAYLOAD_TYPE,
    build_peer, negotiated_codec,
};
use crate::verification::VerificationCode;

impl Session {
    /// Carries out `actions` in order; a step that fails fails the connection.
    pub(super) async fn apply(
        &mut self,
        actions: Vec<NegotiationAction>,
        pending: &mut VecDeque<NegotiationEvent>,
    ) {
        for action in actions {
            if let Err(err) = self.apply_one(action, pending).await {
                tracing::warn!(%err, "call setup step failed");
                self.emit(CallEvent::SetupFailed(format!("call setup failed: {err}")));
                // The negotiator drops the connection; its backoff paces the next
                // attempt, so a peer whose descriptions we cannot use is no spin.
                if let Some(generation) = self.peer.as_ref().map(|p| p.generation) {
                    pending.push_back(NegotiationEvent::Failed(generation));
                }
                return;
            }
        }
    }

    async fn apply_one(
        &mut self,
        action: NegotiationAction,
        pending: &mut VecDeque<NegotiationEvent>,
    ) -> Result<(), CallError> {
        let webrtc = |err: webrtc::error::Error| CallError::WebRtc(err.to_string());
        match action {
            NegotiationAction::ClosePeerConnection => self.close_peer().await,
            NegotiationAction::NewPeerConnection(generation) => {
                let built = build_peer(
                    &self.settings,
                    generation,
                    self.peer_events_tx.clone(),
                    self.shared.send_budget.clone(),
                )
                .await?;
                tokio::spawn(run_sender_feedback(
                    Arc::clone(&built.video),
                    Arc::clone(&self.shared),
                ));
                // Before the offer or answer, so the description carries it. A
                // call without chat is still a call.
                match open_chat_channel(built.connection.as_ref()).await {
                    Ok(channel) => {
                        if let Some(chat) = &self.chat {
                            chat.attach(channel);
                        }
                    }
                    Err(err) => tracing::warn!(%err, "no chat channel on this connection"),
                }
                self.peer = Some(CurrentPeer { generation, built });
                self.timing.new_connection();
            }
            NegotiationAction::SendOffer(generation) => {
                let connection = self.connection(generation)?;
                let offer = connection.create_offer(None).await.map_err(webrtc)?;
                let sdp = apply_local(connection.as_ref(), offer).await?;
                self.signal.offer(sdp)?;
            }
            NegotiationAction::RestartIce(generation) => {
                let connection = self.connection(generation)?;
                let options = RTCOfferOptions { ice_restart: true };
                let offer = connection
                    .create_offer(Some(options))
                    .await
                    .map_err(webrtc)?;
                let sdp = apply_local(connection.as_ref(), offer).await?;
                tracing::info!(generation, "restarting ICE");
                self.signal.offer(sdp)?;
            }
            NegotiationAction::AnswerOffer(generation, sdp) => {
                let connection = self.connection(generation)?;
                let offer = RTCSessionDescription::offer(sdp.clone()).map_err(webrtc)?;
                apply_remote(connection.as_ref(), offer, generation, pending).await?;
                let answer = connection.create_answer(None).await.map_err(webrtc)?;
                let local = apply_local(connection.as_ref(), answer).await?;
                self.verify(&local, &sdp);
                self.signal.answer(local)?;
                self.start_outbound().await;
            }
            NegotiationAction::ApplyAnswer(generation, sdp) => {
                let connection = self.connection(generation)?;
                let answer = RTCSessionDescription::answer(sdp.clone()).map_err(webrtc)?;
                apply_remote(connection.as_ref(), answer, generation, pending).await?;
                if let Some(local) = connection.local_description().await {
                    self.verify(&local.sdp, &sdp);
                }
                self.start_outbound().await;
            }
            NegotiationAction::AddRemoteCandidate(generation, candidate) => {
                let connection = self.connection(generation)?;
                match candidate {
                    Some(candidate) if !candidate.candidate.is_empty() => {
                        let init = RTCIceCandidateInit {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_mline_index: candidate.sdp_mline_index,
                            username_fragment: candidate.username_fragment,
                            ..Default::default()
                        };
                        if let Err(err) = connection.add_ice_candidate(init).await {
                            // One bad candidate (an mDNS name we cannot resolve, a
                            // protocol we do not speak) must not end the call.
                            tracing::debug!(%err, "remote candidate not usable");
                        }
                    }
                    _ => tracing::debug!("remote end of candidates"),
                }
            }
            NegotiationAction::SendCandidate(candidate) => self.signal.candidate(candidate)?,
            NegotiationAction::SendBye => self.signal.bye()?,
            NegotiationAction::Report(phase) => self.on_phase(&phase),
        }
        Ok(())
    }

    fn connection(
        &self,
        generation: Generation,
    ) -> Result<Arc<dyn webrtc::peer_connection::PeerConnection>, CallError> {
        self.peer
            .as_ref()
            .filter(|p| p.generation == generation)
            .map(|p| Arc::clone(&p.built.connection))
            .ok_or_else(|| CallError::WebRtc("the connection was replaced".into()))
    }

    /// Points the media writers at the current connection's tracks, with the
    /// payload types the two descriptions agreed on.
    async fn start_outbound(&mut self) {
        if let Some(peer) = &self.peer {
            let built = &peer.built;
            let video = negotiated_codec(
                built.video_sender.as_ref(),
                MIME_TYPE_H264,
                H264_FMTP,
                H264_PAYLOAD_TYPE,
            )
            .await;
            let audio = negotiated_codec(
                built.audio_sender.as_ref(),
                MIME_TYPE_OPUS,
                OPUS_FMTP,
                OPUS_PAYLOAD_TYPE,
            )
            .await;
            tracing::debug!(?video, ?audio, "negotiated codecs");
            let (video_pt, audio_pt) = (video.payload_type, audio.payload_type);
            self.codecs.video = video.mime_type.or(self.codecs.video.take());
            self.codecs.audio = audio.mime_type.or(self.codecs.audio.take());
            let _ = self.video_out.send(Some(Outbound {
                track: Arc::clone(&built.video),
                ssrc: built.video_ssrc,
                payload_type: video_pt,
            }));
            let _ = self.audio_out.send(Some(Outbound {
                track: Arc::clone(&built.audio),
                ssrc: built.audio_ssrc,
                payload_type: audio_pt,
            }));
        }
    }

    /// Derives the verification code of the connection whose descriptions
    /// were just applied, and shows it.
    fn verify(&mut self, local_sdp: &str, remote_sdp: &str) {
        let code = VerificationCode::from_descriptions(local_sdp, remote_sdp);
        if code.is_none() {
            tracing::warn!("a description without a DTLS fingerprint: no verification code");
        }
        if code != self.verification {
            self.verification = code.clone();
            if let Some(code) = code {
                self.emit(CallEvent::Verification(code));
            }
        }
    }

    pub(super) async fn close_peer(&mut self) {
        self.shared.sending.store(false, Ordering::Relaxed);
        let _ = self.video_out.send(None);
        let _ = self.audio_out.send(None);
        if let Some(peer) = self.peer.take()
            && let Err(err) = peer.built.connection.close().await
        {
            tracing::debug!(%err, "closing the peer connection");
        }
        self.timing.connection_closed(Instant::now());
    }
}

/// Applies our own offer or answer and returns the SDP to send (as applied,
/// with whatever candidates were gathered by then).
async fn apply_local(
    connection: &dyn webrtc::peer_connection::PeerConnection,
    description: RTCSessionDescription,
) -> Result<String, CallError> {
    let webrtc = |err: webrtc::error::Error| CallError::WebRtc(err.to_string());
    connection
        .set_local_description(description)
        .await
        .map_err(webrtc)?;
    let local = connection
        .local_description()
        .await
        .ok_or_else(|| CallError::WebRtc("no local description".into()))?;
    tracing::debug!(sdp = %local.sdp, kind = %local.sdp_type, "local description");
    Ok(local.sdp)
}

/// Applies the remote description of connection `generation` and tells the
/// negotiator first thing, so held-back candidates can follow.
async fn apply_remote(
    connection: &dyn webrtc::peer_connection::PeerConnection,
    description: RTCSessionDescription,
    generation: Generation,
    pending: &mut VecDeque<NegotiationEvent>,
) -> Result<(), CallError> {
    connection
        .set_remote_description(description)
        .await
        .map_err(|err| CallError::WebRtc(err.to_string()))?;
    pending.push_front(NegotiationEvent::RemoteDescriptionApplied(generation));
    Ok(())
}
