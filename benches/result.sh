# Shared by the benchmark scripts here (sourced, not run): reading a `bench_worker` RESULT line.

# Prints "WALL CHECKSUM" from the RESULT line in "$1" (the worker's output).
wall_and_checksum() {
    local wall sum
    wall=$(grep -o 'wall_s=[0-9.]*' <<<"$1" | head -1 | cut -d= -f2)
    sum=$(grep -o 'checksum=[0-9a-fx]*' <<<"$1" | head -1 | cut -d= -f2)
    echo "$wall $sum"
}
