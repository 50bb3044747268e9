package dev.shardwise.core.machine;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

/**
 * This CPU's model name and the instruction-set flags that decide how fast bf16 runs, read from
 * {@code /proc/cpuinfo}: {@code avx512_bf16} (AVX512 BF16: {@code vdpbf16ps}, pairs of bf16 products summed into
 * fp32; AMD Zen 4, Intel Cooper Lake and later) and {@code amx_bf16} (AMX tile multiplies; Intel Sapphire Rapids
 * and later). Used to label benchmark figures.
 *
 * @param model the first "model name" line, or "unknown CPU"
 * @param flags the first "flags" line's flags
 */
public record CpuModel(String model, Set<String> flags) {
    /** The flags {@link #describe} reports. */
    public static final List<String> BF16_FLAGS = List.of("avx512f", "avx512_bf16", "amx_bf16", "amx_tile");

    public CpuModel {
        flags = Set.copyOf(flags);
    }

    /** Reads /proc/cpuinfo; an unreadable file (not Linux) gives "unknown CPU" with no flags. */
    public static CpuModel read() {
        try {
            return parse(Files.readString(Path.of("/proc/cpuinfo")));
        } catch (IOException | RuntimeException e) {
            return new CpuModel("unknown CPU (/proc/cpuinfo unreadable)", Set.of());
        }
    }

    /** Parses the text of /proc/cpuinfo (its first processor's "model name" and "flags" lines). */
    public static CpuModel parse(String cpuinfo) {
        String model = "unknown CPU";
        Set<String> flags = new TreeSet<>();
        boolean haveModel = false, haveFlags = false;
        for (String line : cpuinfo.split("\n")) {
            int colon = line.indexOf(':');
            if (colon < 0) continue;
            String key = line.substring(0, colon).trim(), value = line.substring(colon + 1).trim();
            if (!haveModel && key.equals("model name")) {
                model = value;
                haveModel = true;
            } else if (!haveFlags && key.equals("flags")) {
                flags.addAll(Arrays.asList(value.split("\\s+")));
                haveFlags = true;
            }
        }
        return new CpuModel(model, flags);
    }

    public boolean has(String flag) {
        return flags.contains(flag);
    }

    /** One line, e.g. {@code CPU: AMD EPYC; avx512f yes, avx512_bf16 yes, amx_bf16 no, amx_tile no}. */
    public String describe() {
        StringBuilder sb = new StringBuilder("CPU: ").append(model).append(';');
        String sep = " ";
        for (String f : BF16_FLAGS) {
            sb.append(sep).append(f).append(has(f) ? " yes" : " no");
            sep = ", ";
        }
        return sb.toString();
    }
}
