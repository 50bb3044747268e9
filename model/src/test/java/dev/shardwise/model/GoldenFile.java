package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/** Reads the golden files written by tools/pytorch/golden_gpt.py (format in that script's docstring). */
final class GoldenFile {
    private GoldenFile() { }

    static Map<String, Tensor> read(String resource, MemoryPool pool) throws IOException {
        byte[] bytes;
        try (InputStream in = GoldenFile.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IOException("golden file " + resource + " is missing; regenerate it with "
                        + "/usr/bin/python3 tools/pytorch/golden_gpt.py");
            }
            bytes = in.readAllBytes();
        }
        ByteBuffer buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        byte[] magic = new byte[8];
        buf.get(magic);
        if (!new String(magic, StandardCharsets.US_ASCII).equals("SWGOLD1\n")) {
            throw new IOException(resource + " is not a golden file (bad magic); regenerate it with tools/pytorch/golden_gpt.py");
        }
        int count = buf.getInt();
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (int i = 0; i < count; i++) {
            byte[] name = new byte[buf.getInt()];
            buf.get(name);
            int code = buf.getInt();
            int[] shape = new int[buf.getInt()];
            for (int d = 0; d < shape.length; d++) shape[d] = buf.getInt();
            DType dtype = switch (code) {
                case 0 -> DType.F32;
                case 1 -> DType.I32;
                case 2 -> DType.F64;
                default -> throw new IOException(resource + ": unknown dtype code " + code);
            };
            Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, shape);
            long n = t.numel();
            double[] values = new double[(int) n];
            for (int e = 0; e < n; e++) {
                values[e] = switch (dtype) {
                    case F32 -> buf.getFloat();
                    case I32 -> buf.getInt();
                    default -> buf.getDouble();
                };
            }
            t.copyFrom(values);
            out.put(new String(name, StandardCharsets.UTF_8), t);
        }
        return out;
    }
}
