package dev.shardwise.core.machine;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CpuModelTest {
    @Test
    void parsesModelAndBf16FlagsOfTheFirstProcessor() {
        String cpuinfo = """
                processor\t: 0
                vendor_id\t: AuthenticAMD
                model name\t: AMD EPYC 9R14
                flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni
                
                processor\t: 1
                model name\t: something else
                flags\t\t: fpu amx_bf16
                """;
        CpuModel cpu = CpuModel.parse(cpuinfo);
        assertEquals("AMD EPYC 9R14", cpu.model());
        assertTrue(cpu.has("avx512_bf16"));
        assertFalse(cpu.has("amx_bf16"), "only the first processor's flags");
        assertEquals("CPU: AMD EPYC 9R14; avx512f yes, avx512_bf16 yes, amx_bf16 no, amx_tile no", cpu.describe());
    }

    @Test
    void textWithoutTheLinesGivesAnUnknownCpu() {
        CpuModel cpu = CpuModel.parse("nothing here\n");
        assertEquals("unknown CPU", cpu.model());
        assertTrue(cpu.flags().isEmpty());
    }
}
