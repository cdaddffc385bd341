// Chat in a call, over a data channel of the call's own RTCPeerConnection
// (negotiated out of band: label "chat", id 0, ordered and reliable, as the
// Duet app opens it). Nothing goes through the signaling server.
//
// The frames and rules are the app's (docs/protocol.md, "Chat"): each side
// says hello when its channel opens and sends messages only after the other's
// hello; each message carries this page's random tag and a number; the
// receiver shows them once and in order, acknowledges them, and asks for
// what went missing; what is not acknowledged is sent again on the next
// channel, and marked "not delivered" after 30 s.

export const MAX_CHAT_BYTES = 4096;
const GIVE_UP_MS = 30000;
// Messages in flight with no acknowledgement for this long are sent again: a
// receiver asks for a gap it sees, but not for the lost end of a burst.
const RETRANSMIT_MS = 2000;
const encoder = new TextEncoder();

/** Bytes of `text` in UTF-8: the limit is 4 KB of those, not characters. */
export function utf8Bytes(text) {
  return encoder.encode(text).length;
}

/** `HH:MM` of a wall-clock time, in this browser's time zone. */
function timeOfDay(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** The chat of this page: what was sent and not yet acknowledged, what arrived, and the panel. */
export class Chat {
  constructor() {
    this.tag = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
    this.nextId = 1;
    this.waiting = []; // ours, unacknowledged: { message, frame }
    this.givenUp = new Map();
    this.shown = new Map(); // tag -> highest id shown
    this.messages = []; // everything shown, oldest first
    this.channel = null;
    this.peerReady = false; // the other side's hello arrived on this channel
    this.answeredHello = false;
    this.askedResend = null; // `${tag} ${id}` of the gap already asked for
    this.retransmitAt = null; // when messages in flight are sent again
    this.onChange = () => {};
    setInterval(() => this.expire(), 500);
  }

  /** Chat goes over `channel` (the new connection's) from now on. */
  attach(channel) {
    this.channel = channel;
    this.peerReady = false;
    this.answeredHello = false;
    this.askedResend = null;
    this.retransmitAt = null;
    channel.onopen = () => {
      if (this.channel === channel) channel.send(JSON.stringify({ type: 'hello' }));
    };
    channel.onmessage = (event) => {
      if (this.channel === channel && typeof event.data === 'string') this.receive(event.data, channel);
    };
  }

  /** Sends `text` now, or when the channel is back; an error for an empty or oversized one. */
  send(text) {
    if (text.trim() === '') throw new Error('an empty message is not sent');
    const bytes = utf8Bytes(text);
    if (bytes > MAX_CHAT_BYTES) throw new Error(`a message holds at most 4096 bytes of UTF-8; this one has ${bytes}`);
    const message = { id: this.nextId++, author: 'me', text, sentAt: Date.now(), state: 'sending' };
    const frame = JSON.stringify({ type: 'message', from: this.tag, id: message.id, sent_at: message.sentAt, text });
    this.waiting.push({ message, frame, writtenAt: Date.now() });
    this.messages.push(message);
    if (this.peerReady && this.channel?.readyState === 'open') {
      this.channel.send(frame);
      this.retransmitAt ??= Date.now() + RETRANSMIT_MS;
    }
    this.onChange();
    return message.id;
  }

  receive(data, channel) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (frame?.type === 'hello') {
      if (!this.answeredHello) {
        this.answeredHello = true; // ours may have gone before the other side could read it
        channel.send(JSON.stringify({ type: 'hello' }));
      }
      if (!this.peerReady) {
        this.peerReady = true;
        this.sendWaiting(channel, 0);
      }
    } else if (frame?.type === 'message' && typeof frame.text === 'string' && Number.isInteger(frame.id) && typeof frame.from === 'string') {
      if (utf8Bytes(frame.text) > MAX_CHAT_BYTES) return;
      const last = this.shown.get(frame.from) ?? 0;
      if (frame.id <= last) { // a resend: its ack was lost
        channel.send(JSON.stringify({ type: 'ack', to: frame.from, id: last }));
        return;
      }
      if (frame.id > last + 1) { // something before it went missing: shown only in order
        const gap = `${frame.from} ${last + 1}`;
        if (this.askedResend !== gap) {
          this.askedResend = gap;
          channel.send(JSON.stringify({ type: 'resend', to: frame.from, from: last + 1 }));
        }
        return;
      }
      channel.send(JSON.stringify({ type: 'ack', to: frame.from, id: frame.id }));
      this.shown.set(frame.from, frame.id);
      const sentAt = Number.isFinite(frame.sent_at) ? frame.sent_at : Date.now();
      this.messages.push({ id: frame.id, author: 'peer', text: frame.text, sentAt, state: 'received' });
      this.onChange();
    } else if (frame?.type === 'ack' && frame.to === this.tag && Number.isInteger(frame.id)) {
      let progress = false;
      while (this.waiting.length > 0 && this.waiting[0].message.id <= frame.id) {
        this.waiting.shift().message.state = 'delivered';
        progress = true;
      }
      if (progress) this.retransmitAt = this.waiting.length > 0 ? Date.now() + RETRANSMIT_MS : null;
      const late = this.givenUp.get(frame.id);
      if (late) { late.state = 'delivered'; this.givenUp.delete(frame.id); }
      this.onChange();
    } else if (frame?.type === 'resend' && frame.to === this.tag && Number.isInteger(frame.from) && this.peerReady) {
      this.sendWaiting(channel, frame.from);
    }
  }

  /** Sends (again) every message not yet acknowledged from id `from` on, in order. */
  sendWaiting(channel, from) {
    let sent = false;
    for (const { message, frame } of this.waiting) {
      if (message.id >= from) { channel.send(frame); sent = true; }
    }
    if (sent) this.retransmitAt = Date.now() + RETRANSMIT_MS;
  }

  expire() {
    const now = Date.now();
    if (this.retransmitAt !== null && now >= this.retransmitAt) {
      this.retransmitAt = null;
      if (this.peerReady && this.channel?.readyState === 'open') this.sendWaiting(this.channel, 0);
    }
    let changed = false;
    while (this.waiting.length > 0 && now - this.waiting[0].writtenAt >= GIVE_UP_MS) {
      const { message } = this.waiting.shift();
      message.state = 'not delivered';
      this.givenUp.set(message.id, message);
      changed = true;
    }
    if (changed) this.onChange();
  }

  /** The messages for a test or the panel: `{ id, author, text, sent_at, state }`. */
  list() {
    return this.messages.map((m) => ({ id: m.id, author: m.author, text: m.text, sent_at: m.sentAt, state: m.state }));
  }
}

/** The chat panel of the page: the messages with time and sender, and the message box. */
export class ChatPanel {
  constructor(chat, elements) {
    this.chat = chat;
    this.el = elements; // { panel, list, form, input, count, toggle }
    this.unread = 0;
    this.seen = 0;
    chat.onChange = () => this.render();
    elements.form.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = elements.input.value;
      if (text.trim() === '' || utf8Bytes(text) > MAX_CHAT_BYTES) return;
      this.chat.send(text);
      elements.input.value = '';
      this.counted();
    });
    elements.input.addEventListener('input', () => this.counted());
    elements.toggle.addEventListener('click', () => this.toggle());
  }

  toggle() {
    this.el.panel.hidden = !this.el.panel.hidden;
    if (!this.el.panel.hidden) this.el.input.focus();
    this.render();
  }

  counted() {
    const bytes = utf8Bytes(this.el.input.value);
    this.el.count.textContent = bytes > MAX_CHAT_BYTES ? `${bytes} of ${MAX_CHAT_BYTES} bytes: too long` : '';
  }

  render() {
    const { list, panel, toggle } = this.el;
    list.replaceChildren(...this.chat.messages.map((m) => {
      const item = document.createElement('li');
      item.className = `chat-${m.author} chat-${m.state.replace(' ', '-')}`;
      const head = document.createElement('span');
      head.className = 'chat-head';
      const state = m.author === 'me' ? ` · ${m.state === 'sending' ? 'sending…' : m.state}` : '';
      head.textContent = `${m.author === 'me' ? 'You' : 'Them'} · ${timeOfDay(m.sentAt)}${state}`;
      const body = document.createElement('span');
      body.className = 'chat-text';
      body.textContent = m.text;
      item.append(head, body);
      return item;
    }));
    list.scrollTop = list.scrollHeight;
    const fromPeer = this.chat.messages.filter((m) => m.author === 'peer').length;
    if (!panel.hidden) this.seen = fromPeer;
    const unread = fromPeer - this.seen;
    toggle.textContent = unread > 0 ? `Chat (C) · ${unread} new` : 'Chat (C)';
  }
}
