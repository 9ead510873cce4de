#!/bin/sh
# Container entrypoint: write the sipdial config from its template and the environment, then
# run the command (by default `sipdial serve --config /run/sipdial/sipdial.toml`).
#
# Every "${SIPDIAL_NAME}" string or quoted key in the template (docker/sipdial.toml, installed
# as /etc/sipdial/sipdial.toml.in) becomes the value of the environment variable SIPDIAL_NAME,
# quoted as a TOML string, so any character is safe. An unset or empty variable stops the
# container with a message naming every missing one: there are no default secrets.
#
#   SIPDIAL_CONFIG_TEMPLATE  the template (/etc/sipdial/sipdial.toml.in)
#   SIPDIAL_CONFIG           where the config is written, mode 0600 (/run/sipdial/sipdial.toml)
#
# To use a config file of your own instead, bypass this script:
#   docker run --entrypoint sipdial -v "$PWD/my.toml:/etc/sipdial/my.toml:ro" ... \
#       sipdial serve --config /etc/sipdial/my.toml
set -eu

template="${SIPDIAL_CONFIG_TEMPLATE:-/etc/sipdial/sipdial.toml.in}"
config="${SIPDIAL_CONFIG:-/run/sipdial/sipdial.toml}"

umask 077
python3 - "$template" "$config" <<'PY'
import json
import os
import re
import sys

template_path, config_path = sys.argv[1:3]
PLACEHOLDER = re.compile(r'"\$\{(SIPDIAL_[A-Z0-9_]+)\}"')


def toml_string(value: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007F")


with open(template_path, encoding="utf-8") as f:
    template = f.read()
names = sorted(set(PLACEHOLDER.findall(template)))
missing = [name for name in names if not os.environ.get(name)]
if missing:
    sys.exit(f"sipdial entrypoint: set {', '.join(missing)} (the secrets {template_path} "
             "reads from the environment; there are no defaults)")
text = PLACEHOLDER.sub(lambda m: toml_string(os.environ[m.group(1)]), template)
os.makedirs(os.path.dirname(config_path) or ".", exist_ok=True)
partial = config_path + ".partial"
with open(partial, "w", encoding="utf-8") as f:
    f.write(text)
os.replace(partial, config_path)
PY

exec "$@"
