package dev.shardwise.cli.bench;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Which BLAS the PyTorch peer of {@code bench train} runs on, from the {@code BLAS loaded=... build=... mkldnn=...}
 * line its script prints (the BLAS libraries mapped into the Python process after a matmul, and torch's build
 * {@code BLAS_INFO}).
 *
 * <p>Debian's torch calls whatever {@code libblas.so.3} the alternatives system selects. With only {@code libblas3}
 * installed that is the reference (Netlib) BLAS, unblocked and single-threaded, several times slower than OpenBLAS:
 * a ratio against it would flatter us, so {@link #refusal()} says to install {@code libopenblas0-openmp} (the build
 * whose threads follow {@code torch.set_num_threads}) and the benchmark prints no ratio.
 *
 * @param kind    what was found
 * @param loaded  the mapped BLAS library paths (real paths), possibly empty
 * @param build   torch's {@code BLAS_INFO}, or "unknown"
 */
record PeerBlas(Kind kind, List<String> loaded, String build) {
    enum Kind { OPENBLAS_OPENMP, OPENBLAS_PTHREAD, OPENBLAS_SERIAL, OPENBLAS, REFERENCE, MKL, BLIS, UNKNOWN }

    static final String INSTALL = "apt-get install libopenblas0-openmp";
    private static final Pattern LINE = Pattern.compile("^BLAS loaded=(\\S*) build=(\\S*)", Pattern.MULTILINE);

    PeerBlas {
        loaded = List.copyOf(loaded);
    }

    /** Reads the BLAS line out of the script's output; {@link Kind#UNKNOWN} when there is none. */
    static PeerBlas parse(String output) {
        Matcher m = LINE.matcher(output);
        if (!m.find()) return new PeerBlas(Kind.UNKNOWN, List.of(), "unknown");
        List<String> loaded = m.group(1).equals("none") || m.group(1).isEmpty() ? List.of() : Arrays.asList(m.group(1).split(","));
        return new PeerBlas(classify(loaded, m.group(2)), loaded, m.group(2));
    }

    /*
     * Debian's layout: /usr/lib/<triplet>/blas/libblas.so.3 is the reference BLAS (libblas3);
     * .../openblas-openmp/, openblas-pthread/, openblas-serial/ hold OpenBLAS's variants (libopenblas0-*).
     * An optimized library wins over the reference one when both are mapped (libopenblas also brings its own).
     */
    private static Kind classify(List<String> loaded, String build) {
        Kind found = Kind.UNKNOWN;
        for (String path : loaded) {
            String p = path.toLowerCase(Locale.ROOT);
            Kind k = p.contains("openblas-openmp") ? Kind.OPENBLAS_OPENMP
                    : p.contains("openblas-pthread") ? Kind.OPENBLAS_PTHREAD
                    : p.contains("openblas-serial") ? Kind.OPENBLAS_SERIAL
                    : p.contains("openblas") ? Kind.OPENBLAS
                    : p.contains("libmkl") ? Kind.MKL
                    : p.contains("blis") ? Kind.BLIS
                    : p.contains("/blas/libblas") || p.endsWith("/libblas.so.3") || p.contains("/libblas.so") ? Kind.REFERENCE
                    : Kind.UNKNOWN;
            if (found == Kind.UNKNOWN || found == Kind.REFERENCE) found = k == Kind.UNKNOWN ? found : k;
        }
        if (found == Kind.UNKNOWN && build.toLowerCase(Locale.ROOT).contains("mkl")) return Kind.MKL;
        return found;
    }

    /** Why the peer must not be compared against, naming the package to install; null when it may. */
    String refusal() {
        if (kind != Kind.REFERENCE) return null;
        return "PyTorch runs on the reference BLAS (" + String.join(", ", loaded) + "), unoptimized and single-threaded; "
                + "a ratio against it would flatter us, so none is printed. Install OpenBLAS for it: " + INSTALL
                + " (Debian's alternatives then point libblas.so.3 at it), and run bench train again";
    }

    /** One line for the report. */
    String describe() {
        String what = switch (kind) {
            case OPENBLAS_OPENMP -> "OpenBLAS (OpenMP)";
            case OPENBLAS_PTHREAD -> "OpenBLAS (pthreads; its threads do not follow torch.set_num_threads)";
            case OPENBLAS_SERIAL -> "OpenBLAS (serial)";
            case OPENBLAS -> "OpenBLAS";
            case REFERENCE -> "reference BLAS (Netlib)";
            case MKL -> "Intel MKL";
            case BLIS -> "BLIS";
            case UNKNOWN -> "unknown (no BLAS library seen in the process)";
        };
        return what + (loaded.isEmpty() ? "" : " " + String.join(", ", loaded)) + "; torch built with BLAS_INFO=" + build;
    }
}
