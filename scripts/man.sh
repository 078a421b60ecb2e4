#!/usr/bin/env bash
# Man pages from the CLI's own help (clap's --help, through help2man): wingold(1)
# and one wingold-COMMAND(1) per subcommand, into DIR (default target/man).
set -euo pipefail
bin=${1:?usage: man.sh BIN [DIR]}
dir=${2:-target/man}
mkdir -p "$dir"
version=$("$bin" --version | awk '{print $2}')
help2man --no-info --version-string "$version" \
  --name "builds ready-to-clone Windows guest images for Linux KVM hosts, offline" \
  "$bin" -o "$dir/wingold.1"
# The subcommands and their one-line summaries, as `wingold --help` lists them.
"$bin" --help | awk '/^Commands:/ { on = 1; next } on && /^[^ ]/ { exit } on && NF' |
while read -r cmd summary; do
  [ "$cmd" = help ] && continue
  help2man --no-info --version-string "$version" --name "$summary" \
    "$bin $cmd" -o "$dir/wingold-$cmd.1"
done
ls "$dir"
