#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Duet needs to build and test, and only
# the ones that are missing. Idempotent: a second run installs nothing.
#
#   ./scripts/install-deps.sh         all of them
#   ./scripts/install-deps.sh build   only what compiling needs
#   ./scripts/install-deps.sh run     only what running the app and its tests
#                                     needs (the suite installs these while
#                                     the tree compiles)
#
#   build:  compilers, pkg-config, ALSA headers (cpal), libclang (nokhwa's
#           bindgen), cmake (bundled libopus), nasm (openh264's assembly:
#           without it the encoder silently builds ~3x slower), PipeWire's
#           headers (screen sharing on Wayland, through the desktop portal)
set -euo pipefail

#   window: the X11/Wayland and OpenGL libraries the eframe window loads at
#           run time (Mesa's software renderer where there is no GPU)
#   tests:  Xvfb (a display for the window tests) and ImageMagick's `import`
#           (screenshots of it); Debian's Chromium and its ChromeDriver (the
#           browser client's tests: nothing is downloaded at test time)
#   audio:  PulseAudio with ALSA's pulse plugin: a paced virtual speaker and
#           microphone (a null sink and its monitor) where there is no sound
#           card, for measuring audio where the device takes it
#   network: iproute2 (`ip`, `tc`), nftables and iptables (its NFQUEUE
#           target): the network namespaces and impaired links of the tests that
#           need a network other than this machine's (they run as root, as CI
#           does); coturn, the TURN server that relays calls between two NATs
#           (the tests start it themselves; it is not left running)
#   wayland: a Wayland desktop whose screen the desktop portal shares: sway
#           (headless), PipeWire and WirePlumber, xdg-desktop-portal and its
#           wlroots backend, a D-Bus session bus; the tests start them all
#   scale-out: redis-server (rooms shared by several `duet serve --redis`
#           instances) and haproxy (the load balancer in front of them); the
#           multi-server tests start both themselves on free ports
build_packages=(
  build-essential pkg-config libasound2-dev libclang-dev cmake nasm libpipewire-0.3-dev
)
run_packages=(
  libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libegl-mesa0 libx11-xcb1 libxcursor1
  libxi6 libxrender1 libxkbcommon-x11-0 libfontconfig1 libwayland-client0
  xvfb xauth imagemagick chromium chromium-driver
  pulseaudio pulseaudio-utils libasound2-plugins alsa-utils
  iproute2 nftables iptables coturn
  sway pipewire wireplumber xdg-desktop-portal xdg-desktop-portal-wlr dbus
  redis-server haproxy
)

case "${1:-all}" in
  build) packages=("${build_packages[@]}") ;;
  run) packages=("${run_packages[@]}") ;;
  all) packages=("${build_packages[@]}" "${run_packages[@]}") ;;
  *)
    echo "usage: $0 [build|run]   (no argument: all)" >&2
    exit 2
    ;;
esac

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing packages (${missing[*]}) and no apt-get to install them" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
