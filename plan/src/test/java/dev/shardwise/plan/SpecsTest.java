package dev.shardwise.plan;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SpecsTest {
    @Test
    void everyPresetLoads() {
        for (String d : Specs.presetNames("devices.yaml")) assertTrue(Specs.device(d).flops16() > 1e14, d);
        for (String c : Specs.presetNames("clusters.yaml")) assertTrue(Specs.cluster(c).devices() >= 8, c);
        for (String m : Specs.presetNames("models.yaml")) assertTrue(Specs.model(m).parameters() > 1e8, m);
        assertEquals(3072, Specs.cluster("a100x3072").devices());
        assertEquals(312e12, Specs.device("a100-80gb").flops16());
        assertEquals(175e9, Specs.model("gpt3-175b").parameters(), 0.01 * 175e9, "gpt3-175b parameters");
        assertEquals(1008e9, Specs.model("gpt-1t").parameters(), 0.01 * 1008e9, "gpt-1t parameters (Narayanan et al. 1008.0B)");
    }

    @Test
    void userFilesLoadAndUnknownKeysAreErrors(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("m.yaml");
        Files.writeString(model, "layers: 4\nhidden: 256\nheads: 4\nvocab: 1000\nseq: 128\n");
        assertEquals(1024, Specs.model(model.toString()).ffnHidden());
        Path cluster = dir.resolve("c.yaml");
        Files.writeString(cluster, "device: h100-sxm\ndevices_per_node: 8\nnodes: 2\ninter_node_gb_per_s: 50\n");
        assertEquals(16, Specs.cluster(cluster.toString()).devices());
        Files.writeString(model, "layers: 4\nhidden: 256\nheads: 4\nvocab: 1000\nseq: 128\nhiden: 3\n");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Specs.model(model.toString()));
        assertTrue(e.getMessage().contains("unknown key 'hiden'"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Specs.model("gpt-9t"));
        assertTrue(e.getMessage().contains("gpt3-175b"), "lists the presets: " + e.getMessage());
    }
}
