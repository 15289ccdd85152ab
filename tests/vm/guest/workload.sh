#!/bin/sh
# The guest workload: workload.sh MOUNTPOINT DIALECT RUN_LABEL
#
# Runs every step in a fresh directory under MOUNTPOINT and prints one line
# per step on stdout:
#   R|RUN_LABEL|STEP|PASS|MICROSECONDS|
#   R|RUN_LABEL|STEP|FAIL|MICROSECONDS|the last line the step printed
# (a passing step may leave a note with a line "info: ...")
# Each step is a straight list of commands run under `set -e -o pipefail`
# in a subshell: the first command that fails fails the step, and what the
# step printed goes to the console (stderr) for the serial log.
#
# /data holds the source files (made by /init from /dev/urandom) and their
# md5 sums, so written data is checked against sums taken before any 9P.

M=$1
DIALECT=$2
RUN=$3
W=$M/work

# eq GOT WANT WHAT: fails the step with a readable message.
eq() {
    if [ "$1" != "$2" ]; then
        echo "$3: got '$1', want '$2'"
        return 1
    fi
}

# md5 FILE: the sum alone.
md5() { md5sum "$1" | cut -d' ' -f1; }

# Reads of data written through this mount must come from the server, not
# from the guest's page cache (which cache=loose keeps).
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

step_mkdir_nested() {
    mkdir -p n/a/b/c/d/e/f/g
    test -d n/a/b/c/d/e/f/g
    mkdir n/a/b/c/d/e/f/g/h
    if mkdir n/a/b 2> /dev/null; then echo "mkdir of an existing dir succeeded"; exit 1; fi
    eq "$(ls n/a/b/c/d/e/f/g)" h "listing of the deepest dir"
    eq "$(stat -c %F n/a/b/c)" directory "type"
}

step_write_13MB() {
    for f in f1m f4m f8m; do cp /data/$f big_$f; done
    sync
}

step_read_back_md5() {
    drop_caches
    for f in f1m f4m f8m; do
        eq "$(stat -c %s big_$f)" "$(stat -c %s /data/$f)" "size of $f"
        eq "$(md5 big_$f)" "$(cat /data/$f.md5)" "md5 of $f read back"
    done
}

step_append() {
    printf 'line one\n' > ap
    printf 'line two\n' >> ap
    printf 'line three\n' >> ap
    eq "$(cat ap)" "$(printf 'line one\nline two\nline three')" "appended text"
    cp /data/f1m ap_big
    cat /data/f1m >> ap_big
    drop_caches
    eq "$(stat -c %s ap_big)" 2097152 "size after appending 1 MiB"
    eq "$(tail -c 1048576 ap_big | md5sum | cut -d' ' -f1)" "$(cat /data/f1m.md5)" "md5 of the appended half"
}

step_truncate() {
    cp /data/f1m t
    truncate -s 1000 t
    eq "$(stat -c %s t)" 1000 "size after shrinking"
    truncate -s 5000 t
    drop_caches
    eq "$(stat -c %s t)" 5000 "size after extending"
    eq "$(head -c 1000 t | md5sum | cut -d' ' -f1)" "$(head -c 1000 /data/f1m | md5sum | cut -d' ' -f1)" "the kept 1000 bytes"
    eq "$(tail -c 4000 t | md5sum | cut -d' ' -f1)" "$(head -c 4000 /dev/zero | md5sum | cut -d' ' -f1)" "the extension reads as zeros"
    truncate -s 0 t
    eq "$(stat -c %s t)" 0 "size after truncating to 0"
    : > t2
    printf abcdef > t2
    : > t2
    eq "$(stat -c %s t2)" 0 "size after O_TRUNC"
}

step_chmod() {
    : > m
    chmod 0741 m
    eq "$(stat -c %a m)" 741 "mode"
    chmod 4755 m
    eq "$(stat -c %a m)" 4755 "setuid mode"
    mkdir md
    chmod 0700 md
    eq "$(stat -c %a md)" 700 "directory mode"
    drop_caches
    eq "$(stat -c %a m)" 4755 "mode after dropping caches"
}

step_chown() {
    : > o
    chown 1234:5678 o
    eq "$(stat -c %u:%g o)" 1234:5678 "owner"
    chown 42 o
    eq "$(stat -c %u:%g o)" 42:5678 "owner after chown uid only"
    chgrp 77 o
    eq "$(stat -c %u:%g o)" 42:77 "owner after chgrp"
    mkdir od
    chown 1000:1000 od
    drop_caches
    eq "$(stat -c %u:%g od)" 1000:1000 "directory owner after dropping caches"
}

step_symlink() {
    printf 'target data\n' > st
    ln -s st sl
    ln -s ../no/such/place dangling
    mkdir sd
    ln -s ../st sd/up
    test -L sl
    eq "$(readlink sl)" st "readlink"
    eq "$(readlink dangling)" ../no/such/place "readlink of a dangling link"
    eq "$(cat sl)" "target data" "reading through the link"
    eq "$(cat sd/up)" "target data" "reading through a relative link"
    eq "$(stat -c %F sl)" "symbolic link" "type"
    if cat dangling 2> /dev/null; then echo "a dangling link opened"; exit 1; fi
}

step_hard_link() {
    printf 'shared\n' > h1
    ln h1 h2
    eq "$(stat -c %h h1)" 2 "link count"
    eq "$(stat -c %i h1)" "$(stat -c %i h2)" "inode of both names"
    printf 'more\n' >> h2
    drop_caches
    eq "$(cat h1)" "$(printf 'shared\nmore')" "content through the other name"
    rm h1
    eq "$(stat -c %h h2)" 1 "link count after unlinking one name"
    eq "$(cat h2)" "$(printf 'shared\nmore')" "content after unlinking one name"
}

step_rename_across_dirs() {
    mkdir r1 r2
    printf 'moving\n' > r1/f
    mv r1/f r2/g
    test ! -e r1/f
    eq "$(cat r2/g)" moving "content after rename"
    printf 'old\n' > r2/h
    mv r2/g r2/h
    eq "$(cat r2/h)" moving "content after rename over an existing file"
    test ! -e r2/g
    mkdir -p r1/sub/deeper
    printf 'deep\n' > r1/sub/deeper/x
    mv r1/sub r2/sub2
    eq "$(cat r2/sub2/deeper/x)" deep "file inside a renamed directory"
    test ! -e r1/sub
    drop_caches
    eq "$(ls r2 | tr '\n' ' ')" "h sub2 " "listing after the renames"
    eq "$(ls r1 | wc -l)" 0 "source directory is empty"
}

step_rm_r() {
    for a in 1 2 3; do
        for b in 1 2 3; do
            mkdir -p tree/d$a/e$b
            for c in 1 2 3; do printf '%s\n' "$a$b$c" > tree/d$a/e$b/f$c; done
        done
    done
    ln -s ../.. tree/d1/loop
    mkfifo tree/d2/fifo
    cp /data/f1m tree/d3/big
    rm -r tree
    test ! -e tree
    eq "$(ls | grep -c '^tree$' || true)" 0 "tree still listed"
}

step_mkfifo() {
    mkfifo p
    test -p p
    eq "$(stat -c %F p)" fifo "type"
    (printf 'through the fifo\n' > p) &
    read -r line < p
    wait
    eq "$line" "through the fifo" "data through the fifo"
    rm p
    test ! -e p
}

step_dir_2000_entries() {
    mkdir big
    i=0
    while [ $i -lt 2000 ]; do
        : > big/entry_$i
        i=$((i + 1))
    done
    drop_caches
    eq "$(ls big | wc -l)" 2000 "entries listed"
    eq "$(ls -a big | wc -l)" 2002 "entries listed with . and .."
    eq "$(ls big | sort | md5sum | cut -d' ' -f1)" "$(cat /data/names2000.md5)" "the set of names"
    eq "$(find big -type f | wc -l)" 2000 "entries found by find"
    rm -r big
}

step_parallel_writers() {
    for i in 1 2 3 4; do
        cp /data/f4m par_$i &
    done
    wait
    for i in 1 2 3 4; do
        dd if=/data/f1m of=pdd_$i bs=64k 2> /dev/null &
    done
    wait
    drop_caches
    for i in 1 2 3 4; do
        eq "$(md5 par_$i)" "$(cat /data/f4m.md5)" "md5 of par_$i"
        eq "$(md5 pdd_$i)" "$(cat /data/f1m.md5)" "md5 of pdd_$i"
    done
}

step_unlink_open_fd() {
    vmtool unlinked "$W/unlinked"
    # The same through the shell: an open descriptor outlives its name.
    exec 4<> sh_unlinked
    rm sh_unlinked
    printf 'written after unlink\n' >&4
    exec 4>&-
    test ! -e sh_unlinked
}

step_xattr() {
    : > xa
    if [ "$DIALECT" = 9p2000.L ]; then
        vmtool xattr "$W/xa"
    else
        vmtool xattr-none "$W/xa"
    fi
}

step_fcntl_lock() {
    vmtool lock "$W/lk" "${DIALECT#9p2000.}"
}

step_df() {
    df -k "$M"
    line=$(df -k "$M" | tail -n 1)
    set -- $line
    # 9P2000.u has no Tstatfs: the client reports zeros itself.
    if [ "$DIALECT" = 9p2000.L ]; then
        [ "$2" -gt 0 ] || { echo "df total is $2"; exit 1; }
        [ "$4" -gt 0 ] || { echo "df available is $4"; exit 1; }
    fi
    echo "info: ${2}K total, ${4}K available"
}

step_cleanup() {
    cd /
    rm -r "$W"
    test ! -e "$W"
}

STEPS="mkdir_nested write_13MB read_back_md5 append truncate chmod chown symlink hard_link
rename_across_dirs rm_r mkfifo dir_2000_entries parallel_writers unlink_open_fd xattr
fcntl_lock df cleanup"

if [ "$1" = --steps ]; then
    echo $STEPS
    exit 0
fi
if ! mkdir "$W"; then
    for s in $STEPS; do echo "R|$RUN|$s|FAIL|0|could not create the work directory"; done
    exit 1
fi
failed=0
for s in $STEPS; do
    t0=$(vmtool now)
    (
        set -e -o pipefail
        cd "$W"
        "step_$s"
    ) > /tmp/step.log 2>&1
    rc=$?
    t1=$(vmtool now)
    if [ $rc -eq 0 ]; then
        echo "R|$RUN|$s|PASS|$((t1 - t0))|$(grep '^info: ' /tmp/step.log | tail -n 1 | cut -c7- | tr '|' '/')"
    else
        failed=1
        echo "---- $RUN $s FAILED (exit $rc); it printed:" >&2
        cat /tmp/step.log >&2
        echo "R|$RUN|$s|FAIL|$((t1 - t0))|$(grep -v '^$' /tmp/step.log | tail -n 1 | tr '|' '/')"
    fi
done
exit $failed
