package dev.shardwise.cli.bench;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The PyTorch peer's BLAS report, from faked script output (no Python needed). */
class PeerBlasTest {
    private static final String RESULT = "RESULT tokens_per_s=186.500 median_ms=5490.1 steps=10 threads=2 torch=1.13.1\n";

    private static String report(String loaded) {
        return "BLAS loaded=" + loaded + " build=open mkldnn=True\n" + RESULT;
    }

    @Test
    void referenceBlasIsRefusedWithTheOpenBlasPackageNamed() {
        StringBuilder printed = new StringBuilder();
        double peer = run(report("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"), printed);
        assertTrue(Double.isNaN(peer), "no ratio against the reference BLAS, got " + peer);
        assertTrue(printed.toString().contains("reference BLAS") && printed.toString().contains("apt-get install libopenblas0-openmp"),
                printed.toString());
    }

    @Test
    void openBlasOpenMpIsComparedAndNamed() {
        StringBuilder printed = new StringBuilder();
        double peer = run(report("/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3,/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblasp-r0.3.21.so"),
                printed);
        assertEquals(186.5, peer, 1e-9);
        assertTrue(printed.toString().contains("OpenBLAS (OpenMP)"), printed.toString());
    }

    @Test
    void optimizedLibraryWinsOverAReferenceOneMappedBesideIt() {
        PeerBlas blas = PeerBlas.parse(report("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3,/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"));
        assertEquals(PeerBlas.Kind.OPENBLAS_PTHREAD, blas.kind());
        assertNull(blas.refusal());
    }

    @Test
    void aScriptWithoutTheReportIsComparedAsUnknown() {
        StringBuilder printed = new StringBuilder();
        assertEquals(186.5, run(RESULT, printed), 1e-9);
        assertTrue(printed.toString().contains("unknown"), printed.toString());
        assertEquals(PeerBlas.Kind.MKL, PeerBlas.parse("BLAS loaded=none build=mkl mkldnn=True\n").kind());
    }

    @Test
    void thePeersThreadsOneDnnAndPrecisionArePrintedBesideItsFigure() {
        StringBuilder printed = new StringBuilder();
        String output = report("/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3")
                + "PEER threads=2 interop=2 omp_num_threads=unset onednn=2.6.3 cpu_capability=AVX512 precision=bf16\n";
        assertEquals(186.5, run(output, printed), 1e-9);
        String text = printed.toString();
        assertTrue(text.contains("2 intra-op threads") && text.contains("oneDNN 2.6.3") && text.contains("CPU capability AVX512")
                && text.contains("precision bf16 (torch.autocast"), text);
        assertTrue(PeerSettings.parse(RESULT).describe().contains("not reported"));
    }

    private static double run(String output, StringBuilder printed) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        BenchOutput out = new BenchOutput(new PrintStream(bytes, true, StandardCharsets.UTF_8), false);
        double peer = BenchTrainCommand.peerTokensPerSecond(output, 0, "/usr/bin/python3", out);
        printed.append(bytes.toString(StandardCharsets.UTF_8));
        return peer;
    }
}
