# Sourced by ./shardwise, ./run-tests and .ci/run: finds a JDK >= 25 and exports JAVA_HOME.
# Order: $JAVA_HOME if it is >= 25, then /usr/lib/jvm/*25* (and newer), then `java` on PATH.

shardwise_java_major() {  # prints the major version of the java binary $1, or nothing
  "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n 1
}

shardwise_find_jdk() {
  local candidate major
  for candidate in "${JAVA_HOME:-}" /usr/lib/jvm/*25* /usr/lib/jvm/*2[6-9]* /usr/lib/jvm/*3[0-9]* \
                   "$(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")")"; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ -x "$candidate/bin/javac" ] || continue
    major=$(shardwise_java_major "$candidate/bin/java")
    if [ -n "$major" ] && [ "$major" -ge 25 ] 2>/dev/null; then
      export JAVA_HOME="$candidate"
      return 0
    fi
  done
  cat >&2 <<'MSG'
shardwise: no JDK 25 or newer found (looked at $JAVA_HOME, /usr/lib/jvm/*25*, and java on PATH).
  Install one, for example Eclipse Temurin 25:
    https://adoptium.net/  (Debian/Ubuntu: apt-get install temurin-25-jdk from the Adoptium repository)
  then run again, or point JAVA_HOME at it:  JAVA_HOME=/path/to/jdk-25 ./shardwise --help
MSG
  return 1
}
