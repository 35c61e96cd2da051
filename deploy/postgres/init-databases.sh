#!/bin/sh
# Runs once, when the postgres volume is first created (/docker-entrypoint-initdb.d): one database per
# service, each owned by its own role, so neither service can read the other's tables.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v chat_password="$CHAT_DB_PASSWORD" \
    -v conversation_password="$CONVERSATION_DB_PASSWORD" <<'SQL'
CREATE ROLE chat LOGIN PASSWORD :'chat_password';
CREATE DATABASE chat OWNER chat;
REVOKE ALL ON DATABASE chat FROM PUBLIC;

CREATE ROLE conversation LOGIN PASSWORD :'conversation_password';
CREATE DATABASE conversation OWNER conversation;
REVOKE ALL ON DATABASE conversation FROM PUBLIC;
SQL
