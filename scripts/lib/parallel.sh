# Sourced by scripts/*_parallel.sh: single-threaded jobs, at most $par_jobs at once, each stopped
# when $par_deadline seconds (0: none) have passed since par_start (a rerun resumes them).
#   par_start JOBS DEADLINE; par_launch NAME LOG CMD...; par_wait
# Each job's last log line is "NAME rc=RC wall_s=S".

# par_options WHO ARGS...: the runners' common options (-j N, --deadline S, --kvtrim BIN,
# --merge-only, --no-merge) into jobs, deadline, bin, merge_only, no_merge; what follows '--'
# into the array par_rest.
par_options() {
  local who=$1
  shift
  jobs=$(nproc) deadline=0 bin=${KVTRIM_BIN:-build/bin/kvtrim} merge_only=0 no_merge=0 par_rest=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      -j) jobs=$2; shift 2 ;;
      --deadline) deadline=$2; shift 2 ;;
      --kvtrim) bin=$2; shift 2 ;;
      --merge-only) merge_only=1; shift ;;
      --no-merge) no_merge=1; shift ;;
      --) shift; par_rest=("$@"); break ;;
      *) echo "$who: unknown option $1" >&2; exit 2 ;;
    esac
  done
  [[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "$who: -j $jobs is not a positive count" >&2; exit 2; }
  [[ $deadline =~ ^[0-9]+$ ]] || { echo "$who: --deadline $deadline is not a number of seconds" >&2; exit 2; }
  [[ -x $bin ]] || { echo "$who: no kvtrim binary at $bin (--kvtrim)" >&2; exit 2; }
}
par_start() { par_jobs=$1 par_deadline=$2 par_t0=$SECONDS par_running=0; }

par_launch() {
  local name=$1 log=$2 limit=0
  shift 2
  while (( par_running >= par_jobs )); do
    wait -n || true
    par_running=$((par_running - 1))
  done
  if (( par_deadline > 0 )); then
    limit=$((par_deadline - (SECONDS - par_t0)))
    if (( limit <= 0 )); then
      echo "deadline reached, $name not started" >&2
      return 0
    fi
  fi
  (
    local t0=$SECONDS rc=0 cmd=("$@")
    (( limit > 0 )) && cmd=(timeout --signal=TERM "$limit" "${cmd[@]}")
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE "${cmd[@]}" > "$log" 2>&1 || rc=$?
    echo "$name rc=$rc wall_s=$((SECONDS - t0))" | tee -a "$log" >&2
  ) &
  par_running=$((par_running + 1))
  echo "started $name ($par_running running, $((SECONDS - par_t0)) s)" >&2
}

par_wait() { wait || true; }

# Appends FILE to DEST, ending it in a newline first: a job cut off mid-line leaves a torn last
# line, which must stay its own line (the readers skip it) rather than spoil the next file's first.
par_append() { [[ -f $1 ]] && sed -e '$a\' "$1" >> "$2" || true; }
