# Sourced by engine/<family>/build (run in the family's module directory). Every module the build
# reads is fetched first, so an empty module cache (a fresh machine) behaves like a warm one:
# `go list -m -f '{{.Dir}}'` alone prints nothing for a module that is not downloaded yet.
# ENGINE_RESOLVE_ONLY=1 stops a build after it has resolved its sources (the cold-path test).

shopt -s inherit_errexit  # a failure inside $(...) stops the build too
family=$(basename "$PWD")

step() { echo "[$family] $*" >&2; }

# The version go.mod pins for a module (read from the module graph, no source needed).
module_version() {
    local out
    if ! out=$(go list -m -f '{{.Version}}' "$1" 2>&1) || [[ -z $out ]]; then
        echo "error: cannot resolve $1 pinned in engine/$family/go.mod:" >&2
        echo "$out" | sed 's/^/  /' >&2
        return 1
    fi
    echo "$out"
}

# The source directory of a module at its pinned version, downloaded first.
module_dir() {
    local version dir out
    version=$(module_version "$1") || return 1
    if ! out=$(go mod download -json "$1@$version" 2>&1); then
        echo "error: the Go module proxy did not serve $1@$version:" >&2
        echo "$out" | sed -n 's/.*"Error": "\(.*\)".*/  \1/p' >&2
        return 1
    fi
    dir=$(go list -m -f '{{.Dir}}' "$1")
    [[ -d $dir ]] || { echo "error: $1@$version downloaded but has no directory" >&2; return 1; }
    echo "$dir"
}

# Builds one main package, printing how far a cold build has got (packages compiled / needed).
build_main() {
    local out=$1 ldflags=$2 pkg=$3 total
    step "resolving the packages of $pkg"
    total=$(go list -deps "$pkg" | wc -l)
    step "compiling $pkg ($total packages; cached ones are skipped)"
    go build -v -trimpath -ldflags "$ldflags" -o "$out" "$pkg" 2>&1 | awk -v total="$total" -v tag="[$family]" '
        /^(#|[a-z]+:)|\.go:[0-9]+/ { print > "/dev/stderr"; next }
        { n++; if (n % 100 == 0) printf "%s   %d/%d packages compiled\n", tag, n, total > "/dev/stderr" }'
    [[ -x $out ]] || { echo "error: building $pkg failed" >&2; return 1; }
    step "built $(basename "$out")"
}

resolved() {
    if [[ ${ENGINE_RESOLVE_ONLY:-} == 1 ]]; then exit 0; fi
}
