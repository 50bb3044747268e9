package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import static dev.shardwise.core.kernels.KernelFixture.assertClose;
import static org.junit.jupiter.api.Assertions.*;

class CachedAttentionTest {
    private final KernelFixture fx = new KernelFixture(17);

    @AfterEach
    void close() { fx.close(); }

    /**
     * Rows [offset, offset+T) of the whole causal attention over S = offset + T positions are what the cached kernel
     * gives for those T rows over the cache: the causal bound and the GQA head map are the training kernel's.
     */
    @ParameterizedTest(name = "offset={0} T={1} NH={2} NKV={3} HS={4} spare={5}")
    @CsvSource({"0, 1, 1, 1, 2, 0", "0, 5, 3, 3, 6, 2", "6, 1, 4, 2, 16, 3", "7, 3, 6, 2, 34, 0", "11, 9, 2, 1, 5, 1",
            "30, 2, 4, 4, 64, 5"})
    void newRowsMatchTheirRowsOfTheWholeAttention(int offset, int t, int nh, int nkv, int hs, int spare) {
        String cs = "offset=" + offset + " T=" + t + " NH=" + nh + " NKV=" + nkv + " HS=" + hs;
        int s = offset + t;
        double scale = 1 / Math.sqrt(hs);
        for (DType dt : new DType[]{DType.F32, DType.F64}) {
            Tensor qkv = fx.randn(dt, 1, 1, s, nh + 2 * nkv, hs);   // a fused view, as the model holds it
            Tensor q = qkv.slice(2, 0, nh), k = qkv.slice(2, nh, nkv), v = qkv.slice(2, nh + nkv, nkv);
            Tensor whole = fx.zeros(dt, 1, s, nh, hs), lse = fx.zeros(dt, 1, nh, s);
            Attention.forward(whole, lse, q, k, v, scale);
            // the cache has room past the rows filled (spare), whose garbage must not be read
            Tensor cacheK = fx.zeros(dt, s + spare, nkv, hs).fill(1e6), cacheV = fx.zeros(dt, s + spare, nkv, hs).fill(-1e6);
            cacheK.slice(0, 0, s).copyFrom(k.select(0, 0).toDoubleArray());
            cacheV.slice(0, 0, s).copyFrom(v.select(0, 0).toDoubleArray());
            Tensor out = fx.zeros(dt, t, nh, hs);
            CachedAttention.forward(out, q.select(0, 0).slice(0, offset, t), cacheK, cacheV, offset, scale);
            assertClose(cs + " " + dt.label(), out, whole.select(0, 0).slice(0, offset, t), 2e-5, 2e-5);
        }
    }

    @Test
    void refusesACacheShorterThanTheRowsAndMixedShapes() {
        Tensor q = fx.zeros(DType.F32, 2, 4, 8), out = fx.zeros(DType.F32, 2, 4, 8);
        Tensor k = fx.zeros(DType.F32, 5, 2, 8), v = fx.zeros(DType.F32, 5, 2, 8);
        var e = assertThrows(IllegalArgumentException.class, () -> CachedAttention.forward(out, q, k, v, 4, 1));
        assertTrue(e.getMessage().contains("at least 6 positions"), e.getMessage());
        Tensor k3 = fx.zeros(DType.F32, 5, 3, 8);
        e = assertThrows(IllegalArgumentException.class, () -> CachedAttention.forward(out, q, k3, k3, 0, 1));
        assertTrue(e.getMessage().contains("must divide"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> CachedAttention.forward(out, q, k, v, -1, 1));
    }
}
