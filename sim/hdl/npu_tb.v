// Simulation top of the whole NPU: the generated `npu`, its clock, and a memory on either side
// of the testbench boundary.
//
// - Two clocks run the design (`npu_clk`): `clk`, driven by the testbench (cocotb's Clock), for
//   everything that needs its bus models (they sample and drive at the edge of the clock they
//   drive themselves), and a clock generated here (10 ns period) while `run_int` is high, so a
//   long run costs the testbench nothing per edge: it sets `run_int` with its own clock stopped
//   low, and sleeps until the interrupt.
// - ext_mem = 0: m_axi is served by `axi_mem` (bulk-loaded memory in the simulator).
//   ext_mem = 1: m_axi leaves through the m_axi__* ports, for cocotbext-axi's AxiRam.
// - s_axil__* and irq are the NPU's own, for cocotbext-axi's AxiLiteMaster.
// - Trace: every command that retires is stamped with the cycle and the MAC-active count into
//   trace_load/_exec/_store[index] (low 32 bits each), dumped with $writememh on `trace_dump`.
//
// Simulation only.

module npu_tb #(
    parameter DATA_WIDTH = 128,
    parameter ID_WIDTH = 4,
    parameter MEM_ADDR_BITS = 26,
    parameter TRACE_BITS = 17
) (
    input  wire                    clk,
    input  wire                    run_int,
    input  wire                    rst,
    input  wire                    ext_mem,
    output wire                    irq,
    // memory side, to an external AXI4 slave model (used when ext_mem = 1)
    output wire [ID_WIDTH-1:0]     m_axi__awid,
    output wire [31:0]             m_axi__awaddr,
    output wire [7:0]              m_axi__awlen,
    output wire [2:0]              m_axi__awsize,
    output wire [1:0]              m_axi__awburst,
    output wire                    m_axi__awlock,
    output wire [3:0]              m_axi__awcache,
    output wire [2:0]              m_axi__awprot,
    output wire [3:0]              m_axi__awqos,
    output wire                    m_axi__awvalid,
    input  wire                    m_axi__awready,
    output wire [DATA_WIDTH-1:0]   m_axi__wdata,
    output wire [DATA_WIDTH/8-1:0] m_axi__wstrb,
    output wire                    m_axi__wlast,
    output wire                    m_axi__wvalid,
    input  wire                    m_axi__wready,
    input  wire [ID_WIDTH-1:0]     m_axi__bid,
    input  wire [1:0]              m_axi__bresp,
    input  wire                    m_axi__bvalid,
    output wire                    m_axi__bready,
    output wire [ID_WIDTH-1:0]     m_axi__arid,
    output wire [31:0]             m_axi__araddr,
    output wire [7:0]              m_axi__arlen,
    output wire [2:0]              m_axi__arsize,
    output wire [1:0]              m_axi__arburst,
    output wire                    m_axi__arlock,
    output wire [3:0]              m_axi__arcache,
    output wire [2:0]              m_axi__arprot,
    output wire [3:0]              m_axi__arqos,
    output wire                    m_axi__arvalid,
    input  wire                    m_axi__arready,
    input  wire [ID_WIDTH-1:0]     m_axi__rid,
    input  wire [DATA_WIDTH-1:0]   m_axi__rdata,
    input  wire [1:0]              m_axi__rresp,
    input  wire                    m_axi__rlast,
    input  wire                    m_axi__rvalid,
    output wire                    m_axi__rready,
    // control
    input  wire [11:0]             s_axil__awaddr,
    input  wire [2:0]              s_axil__awprot,
    input  wire                    s_axil__awvalid,
    output wire                    s_axil__awready,
    input  wire [31:0]             s_axil__wdata,
    input  wire [3:0]              s_axil__wstrb,
    input  wire                    s_axil__wvalid,
    output wire                    s_axil__wready,
    output wire [1:0]              s_axil__bresp,
    output wire                    s_axil__bvalid,
    input  wire                    s_axil__bready,
    input  wire [11:0]             s_axil__araddr,
    input  wire [2:0]              s_axil__arprot,
    input  wire                    s_axil__arvalid,
    output wire                    s_axil__arready,
    output wire [31:0]             s_axil__rdata,
    output wire [1:0]              s_axil__rresp,
    output wire                    s_axil__rvalid,
    input  wire                    s_axil__rready,
    // bulk memory access and trace
    input  wire                    mem_load,
    input  wire                    mem_dump,
    input  wire [31:0]             mem_dump_lo,
    input  wire [31:0]             mem_dump_hi,
    input  wire                    trace_dump,
    output reg  [63:0]             cycle,
    output reg  [63:0]             macs,
    output reg  [31:0]             retired
);
`ifndef VERILATOR
    // Waveforms on Icarus: +waves=<file> (Verilator traces through its own --trace build).
    reg [8*1024-1:0] wave_file;
    initial begin
        if ($value$plusargs("waves=%s", wave_file)) begin
            $dumpfile(wave_file);
            $dumpvars(0, npu_tb);
        end
    end
`endif

    reg int_clk = 1'b0;
    always @(posedge run_int) begin
        while (run_int) begin
            #5 int_clk = 1'b1;
            #5 int_clk = 1'b0;
        end
    end
    wire npu_clk = run_int ? int_clk : clk;

    // ---- the NPU's memory port
    wire [ID_WIDTH-1:0] awid, arid, bid, rid, mbid, mrid;
    wire [31:0] awaddr, araddr;
    wire [7:0] awlen, arlen;
    wire [2:0] awsize, arsize, awprot, arprot;
    wire [1:0] awburst, arburst, bresp, rresp, mbresp, mrresp;
    wire awlock, arlock;
    wire [3:0] awcache, arcache, awqos, arqos;
    wire awvalid, awready, wlast, wvalid, wready, bvalid, bready, arvalid, arready;
    wire rlast, rvalid, rready;
    wire mawready, mwready, mbvalid, marready, mrlast, mrvalid;
    wire [DATA_WIDTH-1:0] wdata, rdata, mrdata;
    wire [DATA_WIDTH/8-1:0] wstrb;

    wire [31:0] trace_load_index, trace_exec_index, trace_store_index;
    wire trace_load_valid, trace_exec_valid, trace_store_valid, trace_mac;

    npu u_npu (
        .clk(npu_clk), .rst(rst), .irq(irq),
        .m_axi__awid(awid), .m_axi__awaddr(awaddr), .m_axi__awlen(awlen),
        .m_axi__awsize(awsize), .m_axi__awburst(awburst), .m_axi__awlock(awlock),
        .m_axi__awcache(awcache), .m_axi__awprot(awprot), .m_axi__awqos(awqos),
        .m_axi__awvalid(awvalid), .m_axi__awready(awready),
        .m_axi__wdata(wdata), .m_axi__wstrb(wstrb), .m_axi__wlast(wlast),
        .m_axi__wvalid(wvalid), .m_axi__wready(wready),
        .m_axi__bid(bid), .m_axi__bresp(bresp), .m_axi__bvalid(bvalid), .m_axi__bready(bready),
        .m_axi__arid(arid), .m_axi__araddr(araddr), .m_axi__arlen(arlen),
        .m_axi__arsize(arsize), .m_axi__arburst(arburst), .m_axi__arlock(arlock),
        .m_axi__arcache(arcache), .m_axi__arprot(arprot), .m_axi__arqos(arqos),
        .m_axi__arvalid(arvalid), .m_axi__arready(arready),
        .m_axi__rid(rid), .m_axi__rdata(rdata), .m_axi__rresp(rresp), .m_axi__rlast(rlast),
        .m_axi__rvalid(rvalid), .m_axi__rready(rready),
        .s_axil__awaddr(s_axil__awaddr), .s_axil__awprot(s_axil__awprot),
        .s_axil__awvalid(s_axil__awvalid), .s_axil__awready(s_axil__awready),
        .s_axil__wdata(s_axil__wdata), .s_axil__wstrb(s_axil__wstrb),
        .s_axil__wvalid(s_axil__wvalid), .s_axil__wready(s_axil__wready),
        .s_axil__bresp(s_axil__bresp), .s_axil__bvalid(s_axil__bvalid),
        .s_axil__bready(s_axil__bready),
        .s_axil__araddr(s_axil__araddr), .s_axil__arprot(s_axil__arprot),
        .s_axil__arvalid(s_axil__arvalid), .s_axil__arready(s_axil__arready),
        .s_axil__rdata(s_axil__rdata), .s_axil__rresp(s_axil__rresp),
        .s_axil__rvalid(s_axil__rvalid), .s_axil__rready(s_axil__rready),
        .trace__load_valid(trace_load_valid), .trace__load_index(trace_load_index),
        .trace__exec_valid(trace_exec_valid), .trace__exec_index(trace_exec_index),
        .trace__store_valid(trace_store_valid), .trace__store_index(trace_store_index),
        .trace__mac_active(trace_mac)
    );

    // ---- external port: the NPU's outputs go out always; valid only when selected
    assign m_axi__awid = awid;       assign m_axi__awaddr = awaddr;  assign m_axi__awlen = awlen;
    assign m_axi__awsize = awsize;   assign m_axi__awburst = awburst;
    assign m_axi__awlock = awlock;   assign m_axi__awcache = awcache;
    assign m_axi__awprot = awprot;   assign m_axi__awqos = awqos;
    assign m_axi__awvalid = awvalid & ext_mem;
    assign m_axi__wdata = wdata;     assign m_axi__wstrb = wstrb;    assign m_axi__wlast = wlast;
    assign m_axi__wvalid = wvalid & ext_mem;
    assign m_axi__bready = bready & ext_mem;
    assign m_axi__arid = arid;       assign m_axi__araddr = araddr;  assign m_axi__arlen = arlen;
    assign m_axi__arsize = arsize;   assign m_axi__arburst = arburst;
    assign m_axi__arlock = arlock;   assign m_axi__arcache = arcache;
    assign m_axi__arprot = arprot;   assign m_axi__arqos = arqos;
    assign m_axi__arvalid = arvalid & ext_mem;
    assign m_axi__rready = rready & ext_mem;

    assign awready = ext_mem ? m_axi__awready : mawready;
    assign wready = ext_mem ? m_axi__wready : mwready;
    assign bid = ext_mem ? m_axi__bid : mbid;
    assign bresp = ext_mem ? m_axi__bresp : mbresp;
    assign bvalid = ext_mem ? m_axi__bvalid : mbvalid;
    assign arready = ext_mem ? m_axi__arready : marready;
    assign rid = ext_mem ? m_axi__rid : mrid;
    assign rdata = ext_mem ? m_axi__rdata : mrdata;
    assign rresp = ext_mem ? m_axi__rresp : mrresp;
    assign rlast = ext_mem ? m_axi__rlast : mrlast;
    assign rvalid = ext_mem ? m_axi__rvalid : mrvalid;

    axi_mem #(.DATA_WIDTH(DATA_WIDTH), .ID_WIDTH(ID_WIDTH), .ADDR_BITS(MEM_ADDR_BITS)) u_mem (
        .clk(npu_clk), .rst(rst),
        .awid(awid), .awaddr(awaddr), .awlen(awlen), .awsize(awsize), .awburst(awburst),
        .awvalid(awvalid & ~ext_mem), .awready(mawready),
        .wdata(wdata), .wstrb(wstrb), .wlast(wlast), .wvalid(wvalid & ~ext_mem),
        .wready(mwready),
        .bid(mbid), .bresp(mbresp), .bvalid(mbvalid), .bready(bready & ~ext_mem),
        .arid(arid), .araddr(araddr), .arlen(arlen), .arsize(arsize), .arburst(arburst),
        .arvalid(arvalid & ~ext_mem), .arready(marready),
        .rid(mrid), .rdata(mrdata), .rresp(mrresp), .rlast(mrlast), .rvalid(mrvalid),
        .rready(rready & ~ext_mem),
        .load(mem_load), .dump(mem_dump), .dump_lo(mem_dump_lo), .dump_hi(mem_dump_hi)
    );

    // ---- trace of retirements: {cycle, MAC-active count} (low 32 bits each) per command
    reg [63:0] trace_load [0:(1 << TRACE_BITS)-1];
    reg [63:0] trace_exec [0:(1 << TRACE_BITS)-1];
    reg [63:0] trace_store [0:(1 << TRACE_BITS)-1];
    reg [8*1024-1:0] trace_file;
    initial begin
        if (!$value$plusargs("trace_file=%s", trace_file)) trace_file = "trace";
    end
    always @(posedge npu_clk) begin
        if (rst) begin
            cycle <= 0;
            macs <= 0;
            retired <= 0;
        end else begin
            cycle <= cycle + 1;
            macs <= macs + trace_mac;
            retired <= retired + trace_load_valid + trace_exec_valid + trace_store_valid;
            if (trace_load_valid)
                trace_load[trace_load_index[TRACE_BITS-1:0]] <= {cycle[31:0], macs[31:0]};
            if (trace_exec_valid)
                trace_exec[trace_exec_index[TRACE_BITS-1:0]] <= {cycle[31:0], macs[31:0]};
            if (trace_store_valid)
                trace_store[trace_store_index[TRACE_BITS-1:0]] <= {cycle[31:0], macs[31:0]};
        end
    end
    always @(posedge trace_dump) begin
        $writememh({trace_file, ".load.hex"}, trace_load);
        $writememh({trace_file, ".exec.hex"}, trace_exec);
        $writememh({trace_file, ".store.hex"}, trace_store);
    end
endmodule
