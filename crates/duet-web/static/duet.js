// Duet in a browser: joins a room (docs/protocol.md) on the server that served
// this page and holds a call with the one other peer there, native or browser.
//
// Signaling, the call and the page are three parts: `Signaling` keeps the
// WebSocket (reconnecting with backoff), `Call` applies the protocol's rules
// to one RTCPeerConnection at a time, and `Page` turns states into words.

import { StampedVideo, StampReader, BeepSender, BeepListener, percentiles, median } from '/test-signals.js';
import { newRoomName, verificationCode } from '/privacy.js';
import { Chat, ChatPanel } from '/chat.js';

const params = new URLSearchParams(location.search);
const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const $ = (id) => document.getElementById(id);

/** Options of the page, from its URL: `?room=demo&role=caller&test=1&noisy=1&size=640x480&fps=30&tone=880&ice=stun:…`. */
function readOptions() {
  const size = /^(\d+)x(\d+)$/.exec(params.get('size') || '640x480');
  const number = (name, fallback) => {
    const value = Number(params.get(name));
    return params.has(name) && Number.isFinite(value) && value > 0 ? value : fallback;
  };
  return {
    room: params.get('room'),
    role: (params.get('role') || 'auto').toLowerCase(),
    test: params.get('test') === '1',
    noisy: params.get('noisy') === '1',
    width: size ? Math.max(320, Number(size[1])) : 640,
    height: size ? Math.max(240, Number(size[2])) : 480,
    fps: number('fps', 30),
    tone: number('tone', 880),
    iceServers: params.getAll('ice').map(iceServer).filter(Boolean),
    relayOnly: params.get('relay') === '1',
  };
}

/**
 * `stun:host:port` or `turn:user:pass@host:port`, as the native app's --ice:
 * the password follows the last `:` before the `@` (coturn's short-lived
 * users are `EXPIRY:NAME`), and either part may be percent-encoded.
 */
function iceServer(url) {
  const turn = /^(turns?):(.+):([^:@]+)@([^@]+)$/.exec(url);
  if (turn) {
    const decode = (text) => { try { return decodeURIComponent(text); } catch { return text; } };
    return { urls: `${turn[1]}:${turn[4]}`, username: decode(turn[2]), credential: decode(turn[3]) };
  }
  return /^(stun|turns?):/.test(url) ? { urls: url } : null;
}

/** The words and colours of the page. */
class Page {
  constructor() {
    this.state = 'starting';
    this.notices = new Set();
    this.timerStart = null;
    setInterval(() => this.tick(), 500);
  }

  /** One state of the call, in words: a short status line and a calm screen. */
  show(state, { status, tone = '', title, detail = '', actions = [] }) {
    this.state = state;
    $('status').textContent = status;
    $('status').className = `status ${tone}`;
    $('calm-title').textContent = title || status;
    $('calm-detail').innerHTML = '';
    if (detail instanceof Node) $('calm-detail').append(detail);
    else $('calm-detail').textContent = detail;
    $('actions').replaceChildren(...actions.map(([label, run]) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = label;
      button.addEventListener('click', run);
      return button;
    }));
    document.body.dataset.state = state;
  }

  /** Remote video instead of the calm screen (or back). */
  showRemote(visible) {
    $('remote').hidden = !visible;
    $('calm').hidden = visible;
  }

  notice(text) {
    if (this.notices.has(text)) return;
    this.notices.add(text);
    const item = document.createElement('li');
    item.textContent = text;
    $('notices').append(item);
  }

  startTimer() { this.timerStart = Date.now(); this.tick(); }
  stopTimer() { this.timerStart = null; $('timer').textContent = ''; }

  tick() {
    if (this.timerStart === null) return;
    const seconds = Math.floor((Date.now() - this.timerStart) / 1000);
    $('timer').textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
  }
}

/**
 * The WebSocket to the server: joins on every (re)connection, reconnects with
 * capped exponential backoff, and stops for good on a final refusal or `close`.
 * A rejoin sends back the server's resume token (protocol 1.1), so the seat
 * comes back even while the server still holds the old, dead connection.
 */
class Signaling {
  constructor({ room, role, onMessage, onLost }) {
    this.room = room;
    this.role = role;
    this.onMessage = onMessage;
    this.onLost = onLost;
    this.ws = null;
    this.failures = 0;
    this.final = false;
    this.retry = null;
    this.resume = null;
    /** Connections opened after the first: how often the page came back to the server. */
    this.reconnects = 0;
    this.opened = false;
  }

  get url() {
    return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  }

  open() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.failures = 0;
      if (this.opened) this.reconnects += 1;
      this.opened = true;
      const join = { type: 'join', room: this.room, role: this.role };
      if (this.resume) join.resume = this.resume;
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn('duet: a message from the server is not JSON; ignored');
        return;
      }
      if (message && typeof message.type === 'string') this.onMessage(message);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.final) return;
      const delay = Math.min(8000, 500 * 2 ** this.failures);
      this.failures += 1;
      this.onLost(delay);
      this.retry = setTimeout(() => this.open(), delay);
    };
  }

  /** Keeps the role and resume token the server gave, so a reconnection takes the same seat. */
  settle(role, resume) {
    this.role = role;
    if (typeof resume === 'string') this.resume = resume;
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  /** No more reconnecting: the server refused us, or we hung up. */
  close() {
    this.final = true;
    clearTimeout(this.retry);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}

/** The codecs Duet speaks, H.264 constrained baseline (packetization mode 1) first. */
function preferredCodecs(kind) {
  const codecs = RTCRtpReceiver.getCapabilities(kind)?.codecs ?? [];
  const rank = (codec) => {
    const mime = codec.mimeType.toLowerCase();
    const fmtp = codec.sdpFmtpLine || '';
    if (kind === 'audio') return mime === 'audio/opus' ? 0 : null;
    if (mime === 'video/h264') {
      const baseline = /profile-level-id=42e01f/.test(fmtp);
      const mode1 = /packetization-mode=1/.test(fmtp);
      return (baseline ? 0 : 2) + (mode1 ? 0 : 1);
    }
    return mime === 'video/rtx' ? 10 : null;
  };
  return codecs
    .map((codec) => [rank(codec), codec])
    .filter(([r]) => r !== null)
    .sort((a, b) => a[0] - b[0])
    .map(([, codec]) => codec);
}

/** A dark picture with a pause sign: what the other side sees while the camera is off. */
class PausedPicture {
  constructor(width, height, fps) {
    this.canvas = document.createElement('canvas');
    this.canvas.width = width;
    this.canvas.height = height;
    this.context = this.canvas.getContext('2d', { alpha: false });
    this.stream = this.canvas.captureStream(0);
    this.track = this.stream.getVideoTracks()[0];
    // Chromium captures a canvas only when it was drawn on: draw the same
    // picture again for every frame, so the other side keeps getting frames.
    this.draw();
    this.timer = setInterval(() => this.draw(), 1000 / fps);
  }

  draw() {
    const { width, height } = this.canvas;
    const ctx = this.context;
    ctx.fillStyle = '#262626';
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = '#b4b4b4';
    const bar = Math.floor(height / 10);
    ctx.fillRect(width / 2 - bar * 1.5, height / 2 - bar * 2, bar, bar * 4);
    ctx.fillRect(width / 2 + bar * 0.5, height / 2 - bar * 2, bar, bar * 4);
    this.track.requestFrame();
  }

  stop() {
    clearInterval(this.timer);
    this.track.stop();
  }
}

/** What this page sends: camera and microphone, or the test signals in place of either. */
class LocalMedia {
  static async open(options, page) {
    const media = new LocalMedia(options);
    if (options.test) {
      media.useTestVideo();
      media.useTestAudio();
      return media;
    }
    if (!navigator.mediaDevices?.getUserMedia) {
      page.notice('This page is not served over https, so the browser offers no camera or microphone: sending the test picture and beeps instead. Serve with --tls-cert/--tls-key to use your devices.');
      media.useTestVideo();
      media.useTestAudio();
      return media;
    }
    const video = { width: { ideal: options.width }, height: { ideal: options.height }, frameRate: { ideal: options.fps } };
    try {
      media.stream = await navigator.mediaDevices.getUserMedia({ video, audio: true });
    } catch (error) {
      if (error.name === 'NotAllowedError' || error.name === 'SecurityError') throw error;
      // One of the two is missing or busy: take what opens, test signals for the rest.
      media.stream = new MediaStream();
      for (const [kind, constraints] of [['video', { video }], ['audio', { audio: true }]]) {
        try {
          const got = await navigator.mediaDevices.getUserMedia(constraints);
          got.getTracks().forEach((track) => media.stream.addTrack(track));
        } catch (inner) {
          if (inner.name === 'NotAllowedError') throw inner;
          if (kind === 'video') {
            page.notice(`No camera could be opened (${inner.message || inner.name}): sending a test picture instead.`);
            media.useTestVideo();
          } else {
            page.notice(`No microphone could be opened (${inner.message || inner.name}): sending test beeps instead.`);
            media.useTestAudio();
          }
        }
      }
    }
    return media;
  }

  constructor(options) {
    this.options = options;
    this.stream = new MediaStream();
    this.stamped = null;
    this.beeps = null;
    this.paused = null;
    this.screen = null; // a shared screen's track, sent instead of the camera
    this.audioContext = null;
  }

  /** One AudioContext at 48 kHz for sending and measuring beeps. */
  get audio() {
    if (!this.audioContext) this.audioContext = new AudioContext({ sampleRate: 48000 });
    return this.audioContext;
  }

  useTestVideo() {
    const { width, height, fps, noisy } = this.options;
    this.stamped = new StampedVideo(width, height, fps, noisy);
    this.stamped.start();
    this.stream.addTrack(this.stamped.track);
  }

  useTestAudio() {
    this.beeps = new BeepSender(this.audio, this.options.tone);
    this.beeps.start();
    this.stream.addTrack(this.beeps.track);
  }

  get videoTrack() { return this.stream.getVideoTracks()[0] ?? null; }
  get audioTrack() { return this.stream.getAudioTracks()[0] ?? null; }

  /** The track to send: the picture, or the paused picture while the camera is off. */
  outgoingVideo() {
    if (this.paused) return this.paused.track;
    return this.screen ?? this.videoTrack;
  }

  setCameraOff(off) {
    if (off && !this.paused) {
      const settings = this.videoTrack?.getSettings() ?? {};
      this.paused = new PausedPicture(settings.width || this.options.width, settings.height || this.options.height, this.options.fps);
    } else if (!off && this.paused) {
      this.paused.stop();
      this.paused = null;
    }
  }

  setMuted(muted) {
    if (this.audioTrack) this.audioTrack.enabled = !muted;
  }
}

/**
 * One call at a time with the other peer of the room, by the rules of
 * signaling-v1: the caller offers when it learns of a callee, the callee
 * answers, every call gets a fresh RTCPeerConnection, and a peer that leaves
 * ends the call while we wait in the room for the next one.
 */
class Call {
  constructor(options, media, page) {
    this.options = options;
    this.media = media;
    this.page = page;
    this.signaling = null;
    this.role = null;
    this.peer = null;
    this.pc = null;
    this.generation = 0;
    this.pendingCandidates = [];
    this.serverIceServers = [];
    this.remoteStream = null;
    this.figures = emptyFigures(options);
    this.rates = null;
    this.muted = false;
    this.cameraOff = false;
    this.everConnected = false;
    this.chat = new Chat();
    setInterval(() => this.sampleStats().catch(() => {}), 1000); // a closing connection may refuse
  }

  join() {
    $('hangup').textContent = 'Hang up';
    this.page.show('connecting', { status: `Connecting to the server at ${location.host}…`, title: 'Connecting…' });
    this.signaling = new Signaling({
      room: this.options.room,
      role: this.role ?? this.options.role,
      onMessage: (message) => this.onSignal(message),
      onLost: (delay) => this.onSignalingLost(delay),
    });
    this.signaling.open();
  }

  onSignalingLost(delay) {
    const seconds = Math.round(delay / 100) / 10;
    if (this.pc && this.pc.connectionState === 'connected') {
      // The call is direct: it goes on while signaling comes back.
      $('status').textContent = `In call — the server is gone, reconnecting in ${seconds} s…`;
      $('status').className = 'status warn';
      return;
    }
    this.page.show('server-gone', {
      status: `The server at ${location.host} is gone — reconnecting in ${seconds} s…`,
      tone: 'warn',
      title: 'Can’t reach the Duet server',
      detail: `Is “duet serve” still running on ${location.host}? This page keeps trying.`,
    });
  }

  onSignal(message) {
    switch (message.type) {
      case 'joined':
        this.role = message.role;
        if (Array.isArray(message.ice_servers)) this.serverIceServers = message.ice_servers;
        this.signaling.settle(message.role, message.resume);
        this.figures.role = message.role;
        if (Array.isArray(message.peers) && message.peers.length > 0) this.peerPresent(message.peers[0]);
        else if (!this.inCall()) this.waitForPeer();
        break;
      case 'peer-joined':
        this.peerPresent(message.id);
        break;
      case 'peer-left':
        this.peerGone('left the call');
        break;
      case 'bye':
        this.peerGone('hung up');
        break;
      case 'offer':
        if (this.role === 'callee' && typeof message.sdp === 'string') this.answer(message.sdp).catch((e) => this.failed(e));
        break;
      case 'answer':
        if (this.pc && this.pc.signalingState === 'have-local-offer' && typeof message.sdp === 'string') {
          const pc = this.pc;
          pc.setRemoteDescription({ type: 'answer', sdp: message.sdp })
            .then(() => this.flushCandidates(pc))
            .catch((e) => this.failed(e));
        }
        break;
      case 'candidate':
        this.addCandidate(message.candidate);
        break;
      case 'error':
        this.onServerError(message);
        break;
      default:
        break;
    }
  }

  onServerError({ code, message }) {
    const refusals = {
      room_full: ['This room is full', `Room “${this.options.room}” already has two people in it. Pick another room name.`],
      role_taken: ['That role is taken', `The other person in “${this.options.room}” is already the ${this.options.role}. Join as ${this.options.role === 'caller' ? 'callee' : 'caller'} or auto.`],
      bad_room: ['That room name won’t work', 'Room names are 1 to 64 letters, digits, “_” or “-”.'],
    };
    if (refusals[code]) {
      const [title, detail] = refusals[code];
      this.signaling.close();
      this.page.show('refused', {
        status: `${title}.`, tone: 'bad', title, detail,
        actions: [['Choose another room', () => { location.search = ''; }]],
      });
      this.figures.error = code;
      return;
    }
    console.warn(`duet: the server said ${code}: ${message}`);
  }

  inCall() {
    return this.pc !== null && ['new', 'connecting', 'connected', 'disconnected'].includes(this.pc.connectionState);
  }

  waitForPeer() {
    const other = this.role === 'caller' ? 'callee' : 'caller';
    const link = `${location.origin}/?room=${encodeURIComponent(this.options.room)}`;
    const server = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
    this.page.showRemote(false);
    const command = `duet ${other} --server ${server} --room ${this.options.room}`;
    // The clipboard is offered on https and localhost only; elsewhere the words can be selected.
    const copy = navigator.clipboard
      ? [['Copy invitation', () => navigator.clipboard.writeText(`${link}\n${command}`).catch(() => {})]]
      : [];
    this.page.show('waiting', {
      status: `Waiting for the other person in room “${this.options.room}”`,
      title: 'Waiting for the other person',
      detail: `Send them this link: ${link}\nor, with the Duet app: ${command}`,
      actions: copy,
    });
  }

  peerPresent(id) {
    if (this.peer === id && this.inCall()) return; // our own reconnection: the call goes on
    this.peer = id;
    this.figures.peerKnownAt = Date.now();
    this.page.show('calling', { status: 'Connecting to the other person…', title: 'Connecting…' });
    if (this.role === 'caller') this.offer().catch((e) => this.failed(e));
  }

  peerGone(how) {
    if (this.peer === null) return;
    this.peer = null;
    this.closePeer();
    this.page.show('peer-left', {
      status: `The other person ${how}. Waiting in room “${this.options.room}” for someone to join…`,
      tone: 'warn',
      title: `The other person ${how}`,
      detail: 'Stay on this page: the call starts again when someone joins the room.',
    });
  }

  /** A fresh peer connection for one call, sending our tracks with Duet's codecs. */
  newPeer(asCaller) {
    this.closePeer();
    const generation = ++this.generation;
    const pc = new RTCPeerConnection({
      // Those given in the address, and those the server handed out in `joined`.
      iceServers: [...this.options.iceServers, ...this.serverIceServers],
      iceTransportPolicy: this.options.relayOnly ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    this.pendingCandidates = [];
    this.figures = { ...emptyFigures(this.options), role: this.role, peerKnownAt: this.figures.peerKnownAt };
    this.rates = null;
    const current = () => this.generation === generation;
    pc.onicecandidate = (event) => {
      if (current()) this.signaling.send({ type: 'candidate', candidate: event.candidate ? event.candidate.toJSON() : null });
    };
    pc.ontrack = (event) => { if (current()) this.onRemoteTrack(event.track); };
    pc.onicecandidateerror = (event) => { if (current()) this.onTurnError(event); };
    pc.onconnectionstatechange = () => { if (current()) this.onConnectionState(pc.connectionState); };
    // The chat's channel, negotiated out of band as the app does (no extra round trip).
    this.chat.attach(pc.createDataChannel('chat', { negotiated: true, id: 0, ordered: true }));
    if (asCaller) {
      const video = pc.addTransceiver(this.media.outgoingVideo() ?? 'video', { direction: 'sendrecv', streams: [this.media.stream] });
      const audio = pc.addTransceiver(this.media.audioTrack ?? 'audio', { direction: 'sendrecv', streams: [this.media.stream] });
      this.preferCodecs(video, audio);
    }
    return pc;
  }

  preferCodecs(video, audio) {
    try {
      video.setCodecPreferences(preferredCodecs('video'));
      audio.setCodecPreferences(preferredCodecs('audio'));
    } catch (error) {
      this.page.notice(`This browser would not put H.264 first (${error.message}); the call may fail with the Duet app.`);
    }
  }

  async offer() {
    const pc = this.newPeer(true);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (this.pc === pc) this.signaling.send({ type: 'offer', sdp: offer.sdp });
  }

  async answer(sdp) {
    if (this.peer === null) this.figures.peerKnownAt = Date.now();
    const pc = this.newPeer(false);
    await pc.setRemoteDescription({ type: 'offer', sdp });
    const transceivers = pc.getTransceivers();
    for (const transceiver of transceivers) {
      const kind = transceiver.receiver.track.kind;
      const track = kind === 'video' ? this.media.outgoingVideo() : this.media.audioTrack;
      if (track) {
        await transceiver.sender.replaceTrack(track);
        transceiver.sender.setStreams?.(this.media.stream);
      }
      transceiver.direction = track ? 'sendrecv' : 'recvonly';
      try {
        transceiver.setCodecPreferences(preferredCodecs(kind));
      } catch {
        // The offer's codecs decide; the answer takes what both can do.
      }
    }
    this.flushCandidates(pc);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (this.pc === pc) this.signaling.send({ type: 'answer', sdp: answer.sdp });
  }

  /** Candidates that arrive before the description they belong to wait for it. */
  addCandidate(candidate) {
    if (!this.pc || candidate === null || typeof candidate !== 'object') return;
    if (!this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    this.pc.addIceCandidate(candidate).catch((e) => console.warn('duet: a candidate was refused:', e.message));
  }

  flushCandidates(pc) {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of pending) {
      pc.addIceCandidate(candidate).catch((e) => console.warn('duet: a candidate was refused:', e.message));
    }
  }

  onRemoteTrack(track) {
    if (!this.remoteStream) {
      this.remoteStream = new MediaStream();
      $('remote').srcObject = this.remoteStream;
    }
    this.remoteStream.addTrack(track);
    const remote = $('remote');
    remote.play().catch(() => {
      this.page.notice('The browser held back the sound: click anywhere to hear the other person.');
      document.addEventListener('click', () => remote.play(), { once: true });
    });
    const figures = this.figures;
    if (track.kind === 'video' && !figures.reader) {
      figures.reader = new StampReader(remote);
      figures.reader.onFirstFrame = (at) => {
        if (figures.peerKnownAt !== null) figures.firstFrameMs = at - figures.peerKnownAt;
        this.page.showRemote(true);
      };
    }
    if (track.kind === 'audio' && !figures.listener) {
      const generation = this.generation;
      figures.listener = 'starting';
      BeepListener.create(this.media.audio, new MediaStream([track]))
        .then((listener) => {
          if (this.generation === generation) figures.listener = listener;
          else listener.stop();
        })
        .catch((e) => console.warn('duet: beeps cannot be measured here:', e.message));
    }
  }

  onConnectionState(state) {
    if (state === 'connected') {
      if (this.figures.connectedMs === null && this.figures.peerKnownAt !== null) {
        this.figures.connectedMs = Date.now() - this.figures.peerKnownAt;
      }
      this.figures.connected = true;
      this.figures.connectedAt = Date.now();
      this.everConnected = true;
      this.page.show('in-call', { status: 'In call', tone: 'good', title: 'In call — waiting for the picture…' });
      this.showVerification();
      if (this.page.timerStart === null) this.page.startTimer();
      if (this.figures.reader?.firstFrameAt) this.page.showRemote(true);
    } else if (state === 'disconnected') {
      $('status').textContent = 'The connection is unstable — holding on…';
      $('status').className = 'status warn';
    } else if (state === 'failed') {
      this.closePeer();
      this.page.show('connection-lost', {
        status: 'The connection to the other person was lost.',
        tone: 'bad',
        title: 'Connection lost',
        detail: 'No network path between the two of you works (any more). On different networks a TURN server helps: add ?ice=turn:user:pass@host:port to this page’s address.',
      });
      if (this.role === 'caller' && this.peer !== null) setTimeout(() => { if (this.peer !== null && !this.inCall()) this.offer().catch((e) => this.failed(e)); }, 1000);
    }
  }

  /** A TURN server that refused us or did not answer: one notice, and the call goes on with direct paths. */
  onTurnError({ url, errorCode, errorText }) {
    if (!url || !url.startsWith('turn')) return;
    if (errorCode === 401) {
      this.page.notice(`TURN refused the credentials (${url}): they are wrong or expired; the call can use direct paths only.`);
    } else if (errorCode === 701) {
      this.page.notice(`The TURN server ${url} does not answer; the call can use direct paths only.`);
    } else if (errorCode >= 400) {
      this.page.notice(`TURN refused a relay (${url}: ${errorCode} ${errorText}); the call can use direct paths only.`);
    }
  }

  /** The connection's verification code, in the header: the same code on both screens means nobody is in between. */
  showVerification() {
    const code = this.pc ? verificationCode(this.pc.localDescription?.sdp, this.pc.currentRemoteDescription?.sdp) : null;
    this.figures.verification = code;
    const shown = $('code');
    shown.hidden = code === null;
    if (code) {
      shown.textContent = `Code ${code.text}`;
      shown.title = `Read it to the other person (${code.names.join(', ')}). The same code on both screens means nobody sits in between, not even the server.`;
    }
  }

  failed(error) {
    console.error('duet:', error);
    this.page.show('failed', {
      status: `The call could not be set up: ${error.message}`,
      tone: 'bad',
      title: 'The call could not be set up',
      detail: error.message,
    });
  }

  closePeer() {
    this.generation += 1;
    if (this.pc) this.pc.close();
    this.pc = null;
    // The call's figures stay readable after it ends; only the measuring stops.
    this.figures.reader?.stop();
    this.figures.listener?.stop?.();
    this.remoteStream = null;
    $('code').hidden = true;
    $('remote').srcObject = null;
    this.page.showRemote(false);
    this.page.stopTimer();
  }

  get hungUp() {
    return this.signaling === null || this.signaling.final;
  }

  hangUp() {
    if (this.hungUp) return;
    const signaling = this.signaling;
    signaling.send({ type: 'bye' });
    signaling.final = true; // no reconnecting from here
    this.peer = null;
    this.closePeer();
    // Let the bye leave before the socket closes.
    setTimeout(() => signaling.close(), 100);
    $('hangup').textContent = 'Call again';
    this.page.show('ended', {
      status: 'Call ended.',
      title: 'Call ended',
      detail: `You left room “${this.options.room}”.`,
      actions: [['Call again', () => this.join()]],
    });
  }

  toggleMute() {
    this.muted = !this.muted;
    this.media.setMuted(this.muted);
    $('mute').textContent = this.muted ? 'Unmute' : 'Mute';
    $('mute').classList.toggle('on', this.muted);
  }

  toggleCamera() {
    this.cameraOff = !this.cameraOff;
    this.media.setCameraOff(this.cameraOff);
    const track = this.media.outgoingVideo();
    const sender = this.videoSender();
    if (sender && track) sender.replaceTrack(track).catch((e) => console.warn('duet:', e.message));
    $('local').srcObject = this.cameraOff ? this.media.paused.stream : this.media.stream;
    $('camera').textContent = this.cameraOff ? 'Camera on' : 'Camera off';
    $('camera').classList.toggle('on', this.cameraOff);
  }

  /** Shares a screen (or window) instead of the camera, or goes back to the camera; the call goes on. */
  async toggleScreen() {
    if (this.media.screen) {
      this.stopScreen();
      return;
    }
    if (!navigator.mediaDevices?.getDisplayMedia) {
      this.page.notice('This browser offers no screen sharing here (it needs https, or a browser that has it).');
      return;
    }
    let stream;
    try {
      // Text more than motion: up to 15 pictures a second, at most 1920 wide.
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15, max: 15 }, width: { max: 1920 } }, audio: false });
    } catch (error) {
      if (error.name !== 'NotAllowedError') this.page.notice(`The screen could not be shared (${error.message || error.name}).`);
      return;
    }
    const track = stream.getVideoTracks()[0];
    if (!track) return;
    track.contentHint = 'detail';
    // The browser's own "Stop sharing" ends the track: back to the camera.
    track.addEventListener('ended', () => { if (this.media.screen === track) this.stopScreen(); });
    this.media.screen = track;
    await this.sendVideo();
  }

  stopScreen() {
    const track = this.media.screen;
    this.media.screen = null;
    track?.stop();
    this.sendVideo().catch((e) => console.warn('duet:', e.message));
  }

  /** Sends the current picture; a shared screen keeps its size and gets more bits when the link narrows. */
  async sendVideo() {
    const screen = this.media.screen !== null;
    const sender = this.videoSender();
    const track = this.media.outgoingVideo();
    if (sender && track) {
      await sender.replaceTrack(track).catch((e) => console.warn('duet:', e.message));
      try {
        const parameters = sender.getParameters();
        parameters.degradationPreference = screen ? 'maintain-resolution' : 'balanced';
        const encoding = parameters.encodings?.[0];
        if (encoding) {
          if (screen) {
            encoding.maxBitrate = 2500000;
            encoding.maxFramerate = 15;
          } else {
            delete encoding.maxBitrate;
            delete encoding.maxFramerate;
          }
        }
        await sender.setParameters(parameters);
      } catch (error) {
        console.warn('duet: sending parameters not changed:', error.message);
      }
    }
    $('screen').textContent = screen ? 'Stop sharing' : 'Share screen';
    $('screen').classList.toggle('on', screen);
  }

  videoSender() {
    return this.pc?.getTransceivers().find((t) => t.receiver.track.kind === 'video')?.sender ?? null;
  }

  /** Reads the peer connection's statistics once a second into the figures. */
  async sampleStats() {
    const pc = this.pc;
    if (!pc) return;
    const report = await pc.getStats();
    const f = this.figures;
    const now = performance.now();
    const codecs = new Map();
    report.forEach((s) => { if (s.type === 'codec') codecs.set(s.id, s.mimeType.split('/')[1]); });
    const totals = { videoIn: 0, videoOut: 0 };
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        f.video.codec = codecs.get(s.codecId) ?? f.video.codec;
        f.video.frames_received = s.framesReceived ?? null;
        f.video.frames_decoded = s.framesDecoded ?? null;
        f.video.width = s.frameWidth ?? null;
        f.video.height = s.frameHeight ?? null;
        f.video.fps_received = s.framesPerSecond ?? null;
        f.video.freeze_count = s.freezeCount ?? null;
        f.video.total_freezes_duration_ms = s.totalFreezesDuration != null ? Math.round(s.totalFreezesDuration * 1000) : null;
        f.network.packets_lost = (s.packetsLost ?? 0);
        f.network.retransmitted_packets_received = s.retransmittedPacketsReceived ?? null;
        f.network.jitter_ms = s.jitter != null ? s.jitter * 1000 : null;
        totals.videoIn = s.bytesReceived ?? 0;
      } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
        f.video.frames_sent = s.framesSent ?? null;
        f.video.keyframes_sent = s.keyFramesEncoded ?? null;
        f.video.pli_received = s.pliCount ?? null;
        f.video.nack_received = s.nackCount ?? null;
        f.video.encoder = s.encoderImplementation ?? null;
        totals.videoOut = s.bytesSent ?? 0;
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        f.audio.codec = codecs.get(s.codecId) ?? f.audio.codec;
        f.audio.packets_received = s.packetsReceived ?? null;
      } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        f.audio.packets_sent = s.packetsSent ?? null;
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        if (s.currentRoundTripTime != null) f.network.rtt_ms = s.currentRoundTripTime * 1000;
        const local = report.get(s.localCandidateId)?.candidateType ?? null;
        const remote = report.get(s.remoteCandidateId)?.candidateType ?? null;
        f.network.local_candidate_type = local;
        f.network.remote_candidate_type = remote;
        f.network.path = pathKind(local, remote);
      }
    });
    if (this.rates) {
      const seconds = (now - this.rates.at) / 1000;
      f.video.bitrate_kbps_sent = Math.round(((totals.videoOut - this.rates.videoOut) * 8) / seconds / 1000);
      f.video.bitrate_kbps_received = Math.round(((totals.videoIn - this.rates.videoIn) * 8) / seconds / 1000);
    }
    this.rates = { at: now, ...totals };
    renderStats(this.report());
  }

  /** The figures of the current call, shaped as the native app's `--stats-json` report. */
  report() {
    const f = this.figures;
    const reader = f.reader;
    const listener = typeof f.listener === 'object' ? f.listener : null;
    return {
      role: this.role,
      room: this.options.room,
      state: this.page.state,
      connected: f.connected,
      time_to_connected_ms: f.connectedMs,
      time_to_first_remote_frame_ms: f.firstFrameMs,
      duration_s: f.connectedAt ? (Date.now() - f.connectedAt) / 1000 : 0,
      error: f.error,
      video: {
        ...f.video,
        stamped_frames: reader ? reader.stamped : 0,
        presented_frames: reader ? reader.presented : 0,
        latency_ms: percentiles(reader ? reader.latencies : []),
      },
      audio: {
        ...f.audio,
        beeps_detected: listener ? listener.latencies.length : 0,
        beep_hz: listener ? median(listener.frequencies) : null,
        latency_ms: percentiles(listener ? listener.latencies : []),
      },
      network: { ...f.network },
      signaling_reconnects: this.signaling ? this.signaling.reconnects : 0,
      verification_code: f.verification ? f.verification.text : null,
    };
  }
}

function emptyFigures(options) {
  return {
    role: null,
    peerKnownAt: null,
    connected: false,
    connectedAt: null,
    connectedMs: null,
    firstFrameMs: null,
    error: null,
    reader: null,
    listener: null,
    verification: null,
    video: {
      codec: null, frames_sent: null, frames_received: null, frames_decoded: null,
      width: null, height: null, fps_received: null, freeze_count: null, total_freezes_duration_ms: null,
      bitrate_kbps_sent: null, bitrate_kbps_received: null,
      keyframes_sent: null, pli_received: null, nack_received: null, encoder: null, sent_size: `${options.width}x${options.height}`,
    },
    audio: { codec: null, packets_sent: null, packets_received: null },
    network: {
      rtt_ms: null, packets_lost: null, retransmitted_packets_received: null, jitter_ms: null,
      local_candidate_type: null, remote_candidate_type: null, path: null,
    },
  };
}

/** Which way the packets go, as the app's report says it: `direct`, `through_nat` or `relayed`. */
function pathKind(local, remote) {
  if (local === null || remote === null) return null;
  if (local === 'relay' || remote === 'relay') return 'relayed';
  // Peer-reflexive alone may be an mDNS-hidden host address: not a NAT by itself.
  if (local === 'srflx' || remote === 'srflx') return 'through_nat';
  return 'direct';
}

function renderStats(report) {
  const v = report.video;
  const a = report.audio;
  const n = report.network;
  const ms = (x) => (x === null || x === undefined ? '–' : `${Math.round(x)} ms`);
  $('stats').textContent = [
    `video  ${v.codec ?? '–'} ${v.width ?? '–'}x${v.height ?? '–'} @ ${v.fps_received ?? '–'} fps`,
    `       in ${v.bitrate_kbps_received ?? '–'} kbit/s, out ${v.bitrate_kbps_sent ?? '–'} kbit/s`,
    `audio  ${a.codec ?? '–'}`,
    `path   ${{ direct: 'direct', through_nat: 'through NAT', relayed: 'relayed (TURN)' }[n.path] ?? '–'}`,
    `rtt    ${ms(n.rtt_ms)}   lost ${n.packets_lost ?? '–'}`,
    `latency video ${ms(v.latency_ms.p50)}  audio ${ms(a.latency_ms.p50)}`,
  ].join('\n');
}

function showJoinForm(options) {
  const form = $('join-form');
  form.hidden = false;
  $('calm').hidden = true;
  $('status').textContent = 'Choose a room to join';
  document.body.dataset.state = 'form';
  if (options.room) $('room-input').value = options.room;
  $('role-input').value = ['caller', 'callee'].includes(options.role) ? options.role : 'auto';
  // A new call: a room nobody can guess, which this page then offers to share.
  $('new-call').addEventListener('click', () => {
    const next = new URLSearchParams({ room: newRoomName(), role: 'caller' });
    if (form.elements.test.checked) next.set('test', '1');
    location.search = next.toString();
  });
  $('room-input').focus();
}

async function main() {
  const options = readOptions();
  const page = new Page();
  if (!options.room || !ROOM_NAME.test(options.room)) {
    if (options.room) page.notice('Room names are 1 to 64 letters, digits, “_” or “-”.');
    showJoinForm(options);
    window.duet = { state: () => 'form', report: () => null };
    return;
  }
  if (!['caller', 'callee', 'auto'].includes(options.role)) {
    page.notice(`“${options.role}” is not a role: joining with role auto.`);
    options.role = 'auto';
  }
  page.show('starting', { status: options.test ? 'Starting the test signals…' : 'Asking for your camera and microphone…' });
  let media;
  try {
    media = await LocalMedia.open(options, page);
  } catch (error) {
    const test = new URL(location.href);
    test.searchParams.set('test', '1');
    page.show('media-refused', {
      status: 'The camera and microphone were refused.',
      tone: 'bad',
      title: 'Duet can’t use your camera and microphone',
      detail: 'The browser refused them. Allow them for this page (the camera icon in the address bar) and try again, or join with the test picture and beeps instead.',
      actions: [['Try again', () => location.reload()], ['Join with test signals', () => { location.href = test.href; }]],
    });
    window.duet = { state: () => page.state, report: () => null };
    return;
  }
  if (media.audioContext && media.audioContext.state !== 'running') {
    page.notice('Click anywhere to start the test beeps (the browser waits for a click before playing sound).');
    const resume = () => media.audioContext.resume();
    document.addEventListener('click', resume, { once: true });
    document.addEventListener('keydown', resume, { once: true });
  }
  $('local').srcObject = media.stream;
  $('local').hidden = false;
  $('controls').hidden = false;
  const call = new Call(options, media, page);
  const chatPanel = new ChatPanel(call.chat, {
    panel: $('chat'), list: $('chat-list'), form: $('chat-form'), input: $('chat-input'), count: $('chat-count'), toggle: $('chat-toggle'),
  });
  window.duet = {
    state: () => page.state,
    report: () => call.report(),
    chat: { send: (text) => call.chat.send(text), messages: () => call.chat.list() },
  };

  $('mute').addEventListener('click', () => call.toggleMute());
  $('camera').addEventListener('click', () => call.toggleCamera());
  $('screen').addEventListener('click', () => call.toggleScreen());
  $('hangup').addEventListener('click', () => (call.hungUp ? call.join() : call.hangUp()));
  $('stats-toggle').addEventListener('click', () => { $('stats').hidden = !$('stats').hidden; });
  document.addEventListener('keydown', (event) => {
    if (event.target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    if (key === 'm') call.toggleMute();
    else if (key === 'v') call.toggleCamera();
    else if (key === 'h') $('hangup').click();
    else if (key === 's') $('stats-toggle').click();
    else if (key === 'c') { event.preventDefault(); chatPanel.toggle(); }
    else if (key === 'd') call.toggleScreen();
    else if (key === 'f') {
      if (document.fullscreenElement) document.exitFullscreen();
      else document.documentElement.requestFullscreen?.();
    }
  });
  window.addEventListener('pagehide', () => call.signaling?.send({ type: 'bye' }));
  call.join();
}

main().catch((error) => {
  console.error('duet:', error);
  $('status').textContent = `Duet stopped: ${error.message}`;
  $('status').className = 'status bad';
});
