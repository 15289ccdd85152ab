# report.awk: the side-by-side tables of the VM test, and its verdict.
#
#   awk -v plan=PLAN -v expected=EXPECTED -v md=OUT.md -f report.awk RESULTS
#
# RESULTS holds the guest's lines "R|RUN|STEP|PASS or FAIL|MICROSECONDS|NOTE"
# and "VMTEST ..." markers (with "VMTEST hang RUN" added by the host when the
# guest hung in RUN); PLAN the runs ("SERVER_CONFIG DIALECT OPTIONS SOURCE").
# A step without a result is HANG (the step the guest hung in), MOUNTFAIL
# or NOTRUN. EXPECTED lists what a reference server (qemu, diod, dropin) is known to
# do instead of passing, as "SERVER CONFIG-GLOB STEP-GLOB RESULT reason".
# Every coro9p step must pass; a reference step must pass unless listed. Prints the tables (Markdown) on
# stdout and into md, then "vm-test: N passed, N failed"; exits 1 on any
# failure.

function glob2re(g) { gsub(/\*/, ".*", g); return "^" g "$" }
function ms(us) { return us == "" ? "" : sprintf("%.1f", us / 1000) }
function out(s) { print s; print s > md }

BEGIN {
    FS = "|"
    nservers = split("qemu coro9p diod dropin", servers, " ")
    title["qemu"] = "QEMU"; title["coro9p"] = "coro9p"; title["diod"] = "diod"
    title["dropin"] = "QEMU+coro9p"
    cname["L"] = "9P2000.L, default cache (none)"
    cname["L_loose"] = "9P2000.L, cache=loose"
    cname["u"] = "9P2000.u, default cache (none)"
    cname["u_loose"] = "9P2000.u, cache=loose"
    while ((getline line < plan) > 0) {
        split(line, f, " ")
        run = f[1]
        nruns++; runs[nruns] = run
        s = run; sub(/_.*/, "", s); c = run; sub(/^[^_]*_/, "", c)
        server[run] = s; config[run] = c
        if (!(c in cseen)) { cseen[c] = 1; nconfigs++; configs[nconfigs] = c }
        has[c, s] = 1
        opts[run] = f[3]
    }
    while ((getline line < expected) > 0) {
        if (line ~ /^[ \t]*(#|$)/) continue
        n = split(line, f, " ")
        nexp++; eserver[nexp] = f[1]; econf[nexp] = glob2re(f[2]); estep[nexp] = glob2re(f[3])
        eresult[nexp] = f[4]; epattern[nexp] = f[1] " " f[2] " " f[3] " " f[4]
        reason = line; sub(/^[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +/, "", reason); ereason[nexp] = reason
    }
}

/^VMTEST steps / {
    # Every guest lists the same steps.
    if (nsteps) next
    n = split($0, f, " ")
    for (i = 3; i <= n; i++) { nsteps++; steps[nsteps] = f[i] }
    next
}
$1 == "R" {
    run = $2; step = $3
    res[run, step] = $4; us[run, step] = $5; note[run, step] = $6
    next
}
/^VMTEST end / { split($0, f, " "); total[f[3]] = f[4]; next }
/^VMTEST mountfail / { split($0, f, " "); mountfail[f[3]] = 1; next }
/^VMTEST hang / { split($0, f, " "); hung[f[3]] = 1; next }

END {
    passed = 0; failed = 0
    if (nsteps == 0) { print "vm-test: the guest never listed its steps"; failed++ }
    for (ci = 1; ci <= nconfigs; ci++) {
        c = configs[ci]
        hdr = "| step |"; sep = "|---|"
        for (si = 1; si <= nservers; si++) if (has[c, servers[si]]) { hdr = hdr " " title[servers[si]] " |"; sep = sep "---|" }
        for (si = 1; si <= nservers; si++) if (has[c, servers[si]]) { hdr = hdr " " title[servers[si]] " ms |"; sep = sep "--:|" }
        out("")
        out("### " cname[c])
        out("")
        out(hdr)
        out(sep)
        for (k = 1; k <= nsteps; k++) {
            st = steps[k]
            row = "| " st " |"; trow = ""
            for (si = 1; si <= nservers; si++) {
                s = servers[si]
                if (!has[c, s]) continue
                run = s "_" c
                if ((run, st) in res) r = res[run, st]
                else if (mountfail[run]) r = "MOUNTFAIL"
                else if (hung[run] && !hangseen[run]) { r = "HANG"; hangseen[run] = 1 }
                else r = "NOTRUN"
                # Is this result what the test wants?
                want_fail = ""
                if (s != "coro9p" && r != "PASS")
                    for (e = 1; e <= nexp; e++)
                        if (eserver[e] == s && c ~ econf[e] && st ~ estep[e] && r == eresult[e]) {
                            want_fail = ereason[e]; wante = e
                        }
                if (r == "PASS") {
                    passed++
                    cell = "PASS"
                } else if (want_fail != "") {
                    passed++
                    cell = r " (expected)"
                    if (!(wante in explseen)) { explseen[wante] = 1; nexpl++; expl[nexpl] = "`" epattern[wante] "`: " want_fail }
                } else {
                    failed++
                    cell = "**" r "**"
                    notes = notes "- UNEXPECTED: " run " " st ": " r (mountfail[run] ? " (the mount failed)" : "") ((run, st) in note ? ": " note[run, st] : "") "\n"
                }
                if (r != "PASS" && (run, st) in note && note[run, st] != "")
                    details = details "- " run " " st ": " note[run, st] "\n"
                row = row " " cell " |"
                trow = trow " " ((run, st) in us ? ms(us[run, st]) : "-") " |"
            }
            out(row trow)
        }
        row = "| **whole workload** |"; trow = ""
        for (si = 1; si <= nservers; si++) {
            s = servers[si]
            if (!has[c, s]) continue
            row = row " |"; trow = trow " " ((s "_" c) in total ? "**" ms(total[s "_" c]) "**" : "-") " |"
        }
        out(row trow)
    }
    out("")
    for (k = 1; k <= nexpl; k++) out("- expected: " expl[k])
    if (details != "") { out(""); printf "%s", details; printf "%s", details > md }
    if (notes != "") { out(""); printf "%s", notes; printf "%s", notes > md }
    close(md)
    print ""
    print "vm-test: " passed " passed, " failed " failed"
    exit (failed > 0 ? 1 : 0)
}
