#!/usr/bin/env bash
# The VM test (make vm-test): the Linux kernel's own 9P client mounts
# coro9p, QEMU's virtio-9p server and diod, and runs the same workload on
# each. See docs/vm-test.md.
#
# From nothing, it installs what is missing (qemu-system-x86, busybox-static,
# diod, kmod, cpio, a C compiler), fetches Debian's kernel package with
# `apt-get download` and unpacks it with `dpkg -x` into a cache folder (it is
# never installed as the machine's kernel), builds an initramfs, boots one
# guest (KVM if it really boots one here, else TCG) and prints the results
# side by side. Exit status 0 only if every coro9p step passed in every
# configuration and the reference servers failed only where
# tests/vm/expected-differences says they do.
#
# Environment:
#   VM_CACHE=DIR      kernel cache (default ~/.cache/coro9p/vm)
#   VM_ACCEL=kvm|tcg  skip the probe and use this accelerator
#   VM_UP_TIMEOUT=S   seconds for the guest to reach /init (default 120)
#   VM_TIMEOUT=S      seconds for the whole guest run (default 720)
#   VM_KEEP=1         keep the work folder (exports, logs) after a pass
#   VM_CONFIGS="..."  only these of: L L_loose u u_loose (for debugging)
#   VM_SERVERS="..."  only these of: qemu coro9p diod dropin (for debugging)
#   VM_DROPIN=PATH    QEMU with coro9p in place of hw/9pfs (make qemu-dropin):
#                     adds the server "dropin", run in a second guest that
#                     this binary boots
#   VM_LOGLEVEL=N     guest kernel console loglevel (default 4)
#   VM_QEMU_ARGS=...  more QEMU arguments (e.g. "-trace v9fs_*", for debugging)
#   VM_DIOD_DEBUG=N   diod's debug mask (1: every message, in diod.log)
#   VM_TABLE=FILE     also write the Markdown tables to FILE
#   CORO9P=PATH       use this coro9p binary instead of building one
#   CARGO, CARGO_TARGET_DIR as for cargo
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${VM_CACHE:-$HOME/.cache/coro9p/vm}
up_timeout=${VM_UP_TIMEOUT:-120}
vm_timeout=${VM_TIMEOUT:-720}
msize=262144
t_start=$(date +%s)

log() { echo "vm-test: $*" >&2; }
die() { echo "vm-test: FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
need_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root, or apt-get install them)"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
}
need_apt qemu-system-x86 busybox-static diod kmod cpio xz-utils gcc libc6-dev
[ "$(id -u)" = 0 ] || die "the VM test runs as root (diod exports as root, mapped-xattr on the host)"

work=$(mktemp -d /tmp/coro9p-vm.XXXXXX)
# diod serves the mount-time attach as the user "nobody": the exports must
# be reachable by others.
chmod 755 "$work"
pids=()
# stop_pid PID: SIGTERM, then SIGKILL if it is still there after 10 s.
stop_pid() {
  kill "$1" 2> /dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$1" 2> /dev/null || break
    sleep 0.1
  done
  kill -9 "$1" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
}
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
}
trap cleanup EXIT

# ------------------------------------------------------------------ kernel
# The kernel package linux-image-amd64 depends on, unpacked once per version.
kernel_pkg() { apt-cache depends linux-image-amd64 2> /dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'; }
pkg=$(kernel_pkg)
if [ -z "$pkg" ]; then
  apt-get update -qq || true
  pkg=$(kernel_pkg)
fi
kdir=""
if [ -n "$pkg" ]; then
  ver=$(apt-cache policy "$pkg" | awk '$1 == "Candidate:" { print $2 }')
  kdir=$cache/kernel/${pkg}_${ver}
fi
if [ -z "$kdir" ] || [ ! -f "$kdir/ready" ]; then
  if [ -n "$kdir" ]; then
    log "fetching $pkg $ver (apt-get download, dpkg -x; not installed)"
    rm -rf "$kdir" && mkdir -p "$kdir"
    dl=$work/kernel-deb && mkdir -p "$dl"
    if (cd "$dl" && apt-get download "$pkg=$ver" > /dev/null 2>&1) ||
      { apt-get update -qq && (cd "$dl" && apt-get download "$pkg=$ver" > /dev/null); }; then
      dpkg -x "$dl"/*.deb "$dl/x"
      kver=$(ls "$dl/x/lib/modules")
      "$here/extract-vmlinux.sh" "$dl/x/boot/vmlinuz-$kver" "$kdir/vmlinux"
      echo "$kver" > "$kdir/kver"
      # The modules the guest needs, each after what `modinfo -F depends`
      # says it needs.
      mods=$dl/x/lib/modules/$kver
      declare -A seen=()
      order=()
      modpath() { find "$mods/kernel" -name "$(echo "$1" | sed 's/[-_]/[-_]/g').ko*" | head -n 1; }
      visit() {
        local m=$1 p d
        [ -n "${seen[$m]:-}" ] && return 0
        seen[$m]=1
        p=$(modpath "$m")
        [ -n "$p" ] || { grep -q "/$m.ko" "$mods/modules.builtin" && return 0; die "module $m not in $pkg"; }
        for d in $(modinfo -F depends "$p" | tr , ' '); do visit "$d"; done
        order+=("${p#"$mods/"}")
      }
      for m in 9p 9pnet 9pnet_fd 9pnet_virtio netfs fscache virtio_net virtio_pci; do visit "$m"; done
      mkdir -p "$kdir/modules"
      for p in "${order[@]}"; do
        mkdir -p "$kdir/modules/$(dirname "$p")"
        cp "$mods/$p" "$kdir/modules/$p"
      done
      printf '%s\n' "${order[@]}" > "$kdir/modules.list"
      touch "$kdir/ready"
      rm -rf "$dl"
    else
      rm -rf "$kdir"
      kdir=""
    fi
  fi
  if [ -z "$kdir" ]; then
    # No registry: the newest kernel cached before, if any.
    kdir=$(ls -d "$cache"/kernel/*/ready 2> /dev/null | sort -V | tail -n 1 | xargs -r dirname)
    [ -n "$kdir" ] || die "cannot fetch the Debian kernel package and none is cached in $cache"
    log "apt-get download failed; using the cached $(basename "$kdir")"
  fi
fi
kver=$(cat "$kdir/kver")
log "kernel $(basename "$kdir") ($kver), modules: $(sed 's,.*/,,; s,\.ko.*,,' "$kdir/modules.list" | tr '\n' ' ')"

# ----------------------------------------------------------------- coro9p
if [ -z "${CORO9P:-}" ]; then
  log "building coro9p (release)"
  (cd "$root" && ${CARGO:-cargo} build --release --bin coro9p -q)
  CORO9P=${CARGO_TARGET_DIR:-$root/target}/release/coro9p
  case $CORO9P in /*) ;; *) CORO9P=$root/$CORO9P ;; esac
fi
[ -x "$CORO9P" ] || die "no coro9p binary at $CORO9P"

# -------------------------------------------------------------- the plan
# Configurations: dialect x cache mode. Servers: QEMU's virtio-9p (the
# reference), coro9p and diod (9P2000.L only) over TCP at 10.0.2.2.
configs=${VM_CONFIGS:-L L_loose u u_loose}
servers=" ${VM_SERVERS:-qemu coro9p diod${VM_DROPIN:+ dropin}} "
[[ $servers != *" dropin "* ]] || [ -x "${VM_DROPIN:-}" ] ||
  die "the dropin server needs VM_DROPIN=<QEMU-with-coro9p binary> (make qemu-dropin builds it)"
exports=$work/exports
mkdir -p "$exports"

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null || { echo "$p"; return; }
  done
}
wait_port() {
  local p=$1 pid=$2 name=$3
  for _ in $(seq 100); do
    (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null && return 0
    kill -0 "$pid" 2> /dev/null || die "$name exited at start: $(cat "$work/$name.log")"
    sleep 0.1
  done
  die "$name does not listen on 127.0.0.1:$p: $(cat "$work/$name.log")"
}

qemu_fsdev=()
dropin_fsdev=()
plan=$work/plan
plan_dropin=$work/plan-dropin
: > "$plan"
: > "$plan_dropin"
diod_args=()
diod_port=$(free_port)
want() { [[ $servers == *" $1 "* ]]; }
for c in $configs; do
  case $c in
    L*) dialect=9p2000.L ;;
    u*) dialect=9p2000.u ;;
  esac
  extra=""
  case $c in *_loose) extra=,cache=loose ;; esac
  # coro9p: the same security model as QEMU's run, plus dotu_handles=on
  # (beyond QEMU): over 9P2000.u, fstat and ftruncate of an open, unlinked
  # file go through the open file instead of failing as QEMU's do.
  if want coro9p; then
    mkdir -p "$exports/coro9p_$c"
    port=$(free_port)
    "$CORO9P" --fsdev "local,path=$exports/coro9p_$c,security_model=mapped-xattr,dotu_handles=on" \
      --listen "tcp:127.0.0.1:$port" > "$work/coro9p_$c.log" 2>&1 &
    pids+=($!)
    wait_port "$port" $! "coro9p_$c"
    echo "coro9p_$c $dialect trans=tcp,port=$port,version=$dialect,msize=$msize$extra 10.0.2.2" >> "$plan"
  fi
  # diod: 9P2000.L only; one server exports every configuration's folder.
  if [ "$dialect" = 9p2000.L ] && want diod; then
    mkdir -p "$exports/diod_$c"
    diod_args+=(-e "$exports/diod_$c")
    echo "diod_$c $dialect trans=tcp,port=$diod_port,version=$dialect,msize=$msize,aname=$exports/diod_$c$extra 10.0.2.2" >> "$plan"
  fi
  # QEMU: one virtio-9p device per configuration (a virtio channel serves
  # one mount at a time). Last in each configuration: QEMU's run of u_loose
  # hangs the guest (see expected-differences), and that comes last of all.
  if want qemu; then
    mkdir -p "$exports/qemu_$c"
    qemu_fsdev+=(-fsdev "local,id=fs_$c,path=$exports/qemu_$c,security_model=mapped-xattr"
      -device "virtio-9p-pci,fsdev=fs_$c,mount_tag=qemu_$c")
    echo "qemu_$c $dialect trans=virtio,version=$dialect,msize=$msize$extra qemu_$c" >> "$plan"
  fi
  # QEMU with coro9p in place of hw/9pfs (qemu-dropin/): the same devices
  # and options as QEMU's, in a second guest that binary boots.
  if want dropin; then
    mkdir -p "$exports/dropin_$c"
    dropin_fsdev+=(-fsdev "local,id=fs_$c,path=$exports/dropin_$c,security_model=mapped-xattr"
      -device "virtio-9p-pci,fsdev=fs_$c,mount_tag=dropin_$c")
    echo "dropin_$c $dialect trans=virtio,version=$dialect,msize=$msize$extra dropin_$c" >> "$plan_dropin"
  fi
done
if [ ${#diod_args[@]} -gt 0 ]; then
  diod -f -n -c /dev/null -L stderr ${VM_DIOD_DEBUG:+-d "$VM_DIOD_DEBUG"} \
    -l "127.0.0.1:$diod_port" "${diod_args[@]}" > "$work/diod.log" 2>&1 &
  pids+=($!)
  wait_port "$diod_port" $! diod
fi

# ------------------------------------------------------------- initramfs
ird=$work/initramfs
mkdir -p "$ird"/{bin,dev,proc,sys,tmp,mnt,data,lib/modules}
cp /bin/busybox "$ird/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$ird/bin/$a"; done
cc -static -O2 -Wall -Werror -o "$ird/bin/vmtool" "$here/guest/vmtool.c"
install -m 755 "$here/guest/init" "$ird/init"
install -m 644 "$here/guest/workload.sh" "$ird/workload.sh"
cp -r "$kdir/modules/." "$ird/lib/modules/"
cp "$kdir/modules.list" "$ird/modules.list"
# initramfs PLAN OUT: the guest's initramfs, with PLAN as its /plan.
initramfs() {
  cp "$1" "$ird/plan"
  (cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$2"
}

# ------------------------------------------------------------------ boot
# boot QEMU ACCEL NAME APPEND...: runs QEMU (a binary) in the background on
# $work/initramfs-NAME.cpio with the devices in boot_devices; console and
# results go to $work/console-NAME.log and results-NAME.log. Sets qpid.
boot_devices=()
boot() {
  local bin=$1 accel=$2 name=$3 cpu=max
  shift 3
  [ "$accel" = kvm ] && cpu=host
  : > "$work/console-$name.log"
  : > "$work/results-$name.log"
  "$bin" -accel "$accel" -cpu "$cpu" -smp 1 -m 1024 -nodefaults -no-reboot \
    -display none -vga none -monitor none \
    -kernel "$kdir/vmlinux" -initrd "$work/initramfs-$name.cpio" \
    -append "console=ttyS0 loglevel=${VM_LOGLEVEL:-4} panic=-1 $*" \
    -serial "file:$work/console-$name.log" -serial "file:$work/results-$name.log" \
    "${boot_devices[@]}" ${VM_QEMU_ARGS:-} > "$work/qemu-$name.log" 2>&1 &
  qpid=$!
  pids+=("$qpid")
  # No "Aborted" job report from bash when QEMU dies (KVM's probe does).
  disown "$qpid"
}

# wait_for RESULTS WORD SECONDS: true once a line "VMTEST WORD" shows, false
# at the deadline or when QEMU has exited without it.
wait_for() {
  local results=$1 word=$2 deadline=$(($(date +%s) + $3))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -q "^VMTEST $word" "$results" 2> /dev/null && return 0
    if ! kill -0 "$qpid" 2> /dev/null; then
      grep -q "^VMTEST $word" "$results" 2> /dev/null && return 0
      return 1
    fi
    sleep 0.2
  done
  return 1
}

stop_qemu() { stop_pid "$qpid"; }

show_serial() {
  local name=$1
  echo "------------------------------------------------ serial console ($name: $2)" >&2
  tr -d '\r' < "$work/console-$name.log" >&2 || true
  echo "------------------------------------------------ qemu's own output" >&2
  cat "$work/qemu-$name.log" >&2 || true
  echo "------------------------------------------------ end of serial log" >&2
}

# The guest's network (the TCP servers at 10.0.2.2), for plans that use it.
net_devices() {
  grep -q 'trans=tcp' "$1" && echo "-netdev user,id=n0 -device virtio-net-pci,netdev=n0" || true
}

accel=${VM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    # /dev/kvm may exist and still not boot a stock kernel (a paravirtual
    # KVM, seen here): a short probe boot decides.
    : > "$work/plan-probe"
    initramfs "$work/plan-probe" "$work/initramfs-probe.cpio"
    boot_devices=()
    boot qemu-system-x86_64 kvm probe vmtest.probe
    if wait_for "$work/results-probe.log" up 20; then
      accel=kvm
      stop_qemu
    else
      stop_qemu
      log "KVM did not boot the guest (QEMU stopped, or 20 s passed): using TCG"
    fi
  fi
fi

# run_guest NAME QEMU PLAN DEVICES...: boots one guest with the binary QEMU
# on PLAN's mounts and adds its result lines to $work/results.txt. Until
# the guest says it is done, powers off, or hangs: /init has the kernel
# report a task blocked in a system call for 30 s ("blocked for more
# than"), and a blocked 9P request never comes back (the guest cannot
# unmount either), so the guest is stopped there and the run that was
# going on is marked HANG, the runs after it NOTRUN. Sets guest_status to
# done, hang or early (stopped before it was done).
run_guest() {
  local name=$1 bin=$2 plan_file=$3 t_boot deadline hang="" current
  shift 3
  boot_devices=("$@")
  initramfs "$plan_file" "$work/initramfs-$name.cpio"
  log "booting the $name guest with -accel $accel ($(wc -l < "$plan_file") mounts)"
  t_boot=$(date +%s)
  boot "$bin" "$accel" "$name"
  if ! wait_for "$work/results-$name.log" up "$up_timeout"; then
    stop_qemu
    show_serial "$name" "the guest did not reach /init within ${up_timeout} s"
    die "the $name guest did not come up within ${up_timeout} s (-accel $accel)"
  fi
  log "$name guest up after $(($(date +%s) - t_boot)) s; running the workload"
  guest_status=early
  deadline=$(($(date +%s) + vm_timeout))
  while :; do
    if grep -q '^VMTEST done' "$work/results-$name.log"; then guest_status=done; break; fi
    if grep -q 'blocked for more than' "$work/console-$name.log"; then hang=blocked; break; fi
    kill -0 "$qpid" 2> /dev/null || break
    if [ "$(date +%s)" -ge "$deadline" ]; then hang=timeout; break; fi
    sleep 0.5
  done
  stop_qemu
  log "$name guest ran $(($(date +%s) - t_boot)) s"
  if [ -n "$hang" ]; then
    guest_status=hang
    current=$(tr -d '\r' < "$work/results-$name.log" | awk '$1 == "VMTEST" && $2 == "mount" { r = $3 } $1 == "VMTEST" && $2 == "end" && $3 == r { r = "" } END { print r }')
    log "the $name guest hung ($hang) in run ${current:-?}; stopped it"
    echo "VMTEST hang ${current:-none} $hang" >> "$work/results-$name.log"
  fi
  tr -d '\r' < "$work/results-$name.log" >> "$work/results.txt"
  if grep -q '^VMTEST fatal' "$work/results-$name.log"; then
    show_serial "$name" "the guest's /init failed"
    die "$(grep '^VMTEST fatal' "$work/results-$name.log")"
  fi
}

: > "$work/results.txt"
guests=()
t_vm0=$(date +%s)
if [ -s "$plan" ]; then
  # shellcheck disable=SC2046 # net_devices prints separate arguments
  run_guest main qemu-system-x86_64 "$plan" "${qemu_fsdev[@]}" $(net_devices "$plan")
  guests+=("main:$guest_status")
fi
if [ -s "$plan_dropin" ]; then
  run_guest dropin "$VM_DROPIN" "$plan_dropin" "${dropin_fsdev[@]}"
  guests+=("dropin:$guest_status")
fi
t_vm=$(($(date +%s) - t_vm0))
cat "$plan" "$plan_dropin" > "$work/plan-all"

# ---------------------------------------------------------------- report
status=0
report=$work/report.md
awk -v plan="$work/plan-all" -v expected="$here/expected-differences" -v md="$report" \
  -f "$here/report.awk" "$work/results.txt" || status=1
for g in "${guests[@]}"; do
  if [ "${g#*:}" = early ]; then
    log "the ${g%%:*} guest stopped before it was done (a panic or an early power-off)"
    status=1
  fi
  if [ "$status" != 0 ]; then
    show_serial "${g%%:*}" "a step did not pass"
  elif [ "${g#*:}" = hang ]; then
    log "the ${g%%:*} guest hung where expected-differences says it does (VM_KEEP=1 keeps its serial log)"
  fi
done
if [ -n "${VM_TABLE:-}" ]; then cp "$report" "$VM_TABLE"; fi
log "accelerator $accel; guests ran ${t_vm} s; whole VM test $(($(date +%s) - t_start)) s"
if [ "$status" != 0 ]; then
  log "work folder kept: $work"
  trap - EXIT
  cleanup
  die "see the table and the serial log above"
fi
if [ -n "${VM_KEEP:-}" ]; then
  log "work folder kept: $work"
else
  cleanup
  trap - EXIT
  rm -rf "$work"
fi
