# Sourced by the bench/gpu scripts, from the repository root, on the GPU machine.
# The CUDA binary is over the 64 MiB a device call carries, so it travels gzipped as
# .carry/verdict.gz (scripts/build-cuda.sh, then strip and gzip -9); unpack it once.
BIN=target/cuda/verdict
if [ ! -x "$BIN" ] && [ -f .carry/verdict.gz ]; then
  mkdir -p target/cuda && gunzip -c .carry/verdict.gz > "$BIN" && chmod +x "$BIN"
fi
