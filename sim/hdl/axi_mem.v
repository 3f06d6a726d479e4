// AXI4 memory model for long simulations: the memory lives in the simulator, is loaded and read
// back in bulk with $readmemh/$writememh, and costs the testbench nothing per bus beat.
//
// Simulation only (not synthesisable as written). One word per DATA_WIDTH bits, byte 0 of a word
// in bits [7:0]; 2**ADDR_BITS bytes. Bursts are served in order (INCR only; FIXED and WRAP are
// answered SLVERR), IDs are echoed. Beyond the memory, reads and writes answer DECERR.
//
// Run-time options (plusargs, read at time 0):
//   +mem_latency=N   cycles from AR accepted to the first R beat (default 0)
//   +mem_stall=P     percent of cycles each channel stalls (ready or valid held low), 0..100
//   +mem_seed=S      seed of the stall generators
//   +mem_load=PATH   file for $readmemh on a rising edge of `load` (sparse: "@word" lines)
//   +mem_dump=PATH   file for $writememh of words [dump_lo, dump_hi] on a rising edge of `dump`
//   +mem_err_lo=A +mem_err_hi=B  byte range answered SLVERR (injection; default none)

module axi_mem #(
    parameter DATA_WIDTH = 128,
    parameter ID_WIDTH = 4,
    parameter ADDR_BITS = 26,
    parameter AR_DEPTH = 8,
    parameter AW_DEPTH = 8
) (
    input  wire                    clk,
    input  wire                    rst,
    // AXI4 slave
    input  wire [ID_WIDTH-1:0]     awid,
    input  wire [31:0]             awaddr,
    input  wire [7:0]              awlen,
    input  wire [2:0]              awsize,
    input  wire [1:0]              awburst,
    input  wire                    awvalid,
    output wire                    awready,
    input  wire [DATA_WIDTH-1:0]   wdata,
    input  wire [DATA_WIDTH/8-1:0] wstrb,
    input  wire                    wlast,
    input  wire                    wvalid,
    output wire                    wready,
    output wire [ID_WIDTH-1:0]     bid,
    output wire [1:0]              bresp,
    output wire                    bvalid,
    input  wire                    bready,
    input  wire [ID_WIDTH-1:0]     arid,
    input  wire [31:0]             araddr,
    input  wire [7:0]              arlen,
    input  wire [2:0]              arsize,
    input  wire [1:0]              arburst,
    input  wire                    arvalid,
    output wire                    arready,
    output reg  [ID_WIDTH-1:0]     rid,
    output reg  [DATA_WIDTH-1:0]   rdata,
    output reg  [1:0]              rresp,
    output reg                     rlast,
    output reg                     rvalid,
    input  wire                    rready,
    // bulk access
    input  wire                    load,
    input  wire                    dump,
    input  wire [31:0]             dump_lo,
    input  wire [31:0]             dump_hi
);
    localparam BYTES = DATA_WIDTH / 8;
    localparam SHIFT = $clog2(BYTES);
    localparam WORDS = 1 << (ADDR_BITS - SHIFT);

    reg [DATA_WIDTH-1:0] mem [0:WORDS-1];

    // ---- options
    integer latency, stall, seed;
    reg [31:0] err_lo, err_hi;
    reg [8*1024-1:0] load_file, dump_file;
    initial begin
        if (!$value$plusargs("mem_latency=%d", latency)) latency = 0;
        if (!$value$plusargs("mem_stall=%d", stall)) stall = 0;
        if (!$value$plusargs("mem_seed=%d", seed)) seed = 1;
        if (!$value$plusargs("mem_err_lo=%d", err_lo)) err_lo = 32'hFFFF_FFFF;
        if (!$value$plusargs("mem_err_hi=%d", err_hi)) err_hi = 32'h0;
        if (!$value$plusargs("mem_load=%s", load_file)) load_file = "mem_load.hex";
        if (!$value$plusargs("mem_dump=%s", dump_file)) dump_file = "mem_dump.hex";
    end

    // Zero, as the golden model's memory starts (Icarus would start with x).
    integer z;
    initial for (z = 0; z < WORDS; z = z + 1) mem[z] = {DATA_WIDTH{1'b0}};

    always @(posedge load) $readmemh(load_file, mem);
    always @(posedge dump) $writememh(dump_file, mem, dump_lo, dump_hi);

    // ---- stall generators: one 32-bit xorshift per channel, a stall when its low 7 bits,
    // scaled to 0..99, fall below `stall`.
    reg [31:0] rng [0:4];
    reg [4:0] go;   // 1: the channel may make progress this cycle
    integer k;
    function [31:0] xorshift(input [31:0] x);
        reg [31:0] y;
        begin
            y = x ^ (x << 13);
            y = y ^ (y >> 17);
            xorshift = y ^ (y << 5);
        end
    endfunction
    always @(posedge clk) begin
        if (rst) begin
            for (k = 0; k < 5; k = k + 1) rng[k] <= 32'h9E37_79B9 * (seed + k + 1) | 1;
            go <= 5'h1F;
        end else begin
            for (k = 0; k < 5; k = k + 1) begin
                rng[k] <= xorshift(rng[k]);
                go[k] <= (stall == 0) || (((rng[k][6:0] * 100) >> 7) >= stall);
            end
        end
    end

    function [1:0] resp_of(input [31:0] addr, input [1:0] burst);
        begin
            if (addr >= (1 << ADDR_BITS)) resp_of = 2'd3;            // DECERR
            else if (burst != 2'd1) resp_of = 2'd2;                   // SLVERR
            else if (addr >= err_lo && addr <= err_hi) resp_of = 2'd2;
            else resp_of = 2'd0;
        end
    endfunction

    // ---- reads: AR queue with arrival times, one R beat per cycle from its head
    reg [63:0] cycle;
    always @(posedge clk) cycle <= rst ? 64'd0 : cycle + 64'd1;

    reg [ID_WIDTH-1:0] q_arid [0:AR_DEPTH-1];
    reg [31:0] q_araddr [0:AR_DEPTH-1];
    reg [7:0] q_arlen [0:AR_DEPTH-1];
    reg [1:0] q_arburst [0:AR_DEPTH-1];
    reg [63:0] q_artime [0:AR_DEPTH-1];
    reg [$clog2(AR_DEPTH):0] ar_count;
    reg [$clog2(AR_DEPTH)-1:0] ar_head, ar_tail;
    reg [7:0] r_beat;

    assign arready = !rst && go[0] && (ar_count != AR_DEPTH);
    wire ar_fire = arvalid && arready;
    wire r_fire = rvalid && rready;
    wire r_next = (!rvalid || rready) && go[1] && (ar_count != 0) && (cycle >= q_artime[ar_head]);
    wire [31:0] r_addr = q_araddr[ar_head] + ({24'd0, r_beat} << SHIFT);
    wire [7:0] r_head_len = q_arlen[ar_head];

    always @(posedge clk) begin
        if (rst) begin
            ar_count <= 0; ar_head <= 0; ar_tail <= 0; r_beat <= 0; rvalid <= 0; rlast <= 0;
        end else begin
            if (ar_fire) begin
                q_arid[ar_tail] <= arid;
                q_araddr[ar_tail] <= {araddr[31:SHIFT], {SHIFT{1'b0}}};
                q_arlen[ar_tail] <= arlen;
                q_arburst[ar_tail] <= arburst;
                q_artime[ar_tail] <= cycle + latency;
                ar_tail <= ar_tail + 1;
            end
            if (r_fire) rvalid <= 0;
            if (r_next) begin
                rvalid <= 1;
                rid <= q_arid[ar_head];
                rresp <= resp_of(r_addr, q_arburst[ar_head]);
                rdata <= (r_addr < (1 << ADDR_BITS)) ? mem[r_addr[ADDR_BITS-1:SHIFT]] : 0;
                rlast <= (r_beat == r_head_len);
                if (r_beat == r_head_len) begin
                    r_beat <= 0;
                    ar_head <= ar_head + 1;
                end else begin
                    r_beat <= r_beat + 1;
                end
            end
            // A burst leaves the queue when its last beat is presented (ar_head moves then);
            // ar_count counts bursts not yet fully presented.
            ar_count <= ar_count + ar_fire - (r_next && (r_beat == r_head_len));
        end
    end

    // ---- writes: AW queue, W beats into the head burst, B queue
    reg [ID_WIDTH-1:0] q_awid [0:AW_DEPTH-1];
    reg [31:0] q_awaddr [0:AW_DEPTH-1];
    reg [1:0] q_awburst [0:AW_DEPTH-1];
    reg [$clog2(AW_DEPTH):0] aw_count;
    reg [$clog2(AW_DEPTH)-1:0] aw_head, aw_tail;
    reg [7:0] w_beat;
    reg [1:0] w_resp;     // worst response of the burst so far
    reg [ID_WIDTH-1:0] q_bid [0:AW_DEPTH-1];
    reg [1:0] q_bresp [0:AW_DEPTH-1];
    reg [$clog2(AW_DEPTH):0] b_count;
    reg [$clog2(AW_DEPTH)-1:0] b_head, b_tail;

    assign awready = !rst && go[2] && (aw_count != AW_DEPTH);
    assign wready = !rst && go[3] && (aw_count != 0) && (b_count != AW_DEPTH);
    wire aw_fire = awvalid && awready;
    wire w_fire = wvalid && wready;
    wire [31:0] w_addr = q_awaddr[aw_head] + ({24'd0, w_beat} << SHIFT);
    wire [1:0] w_beat_resp = resp_of(w_addr, q_awburst[aw_head]);
    wire [1:0] w_burst_resp = (w_beat_resp > w_resp) ? w_beat_resp : w_resp;
    reg b_shown;          // bvalid may only rise on a `go` cycle, then holds until bready
    assign bvalid = b_shown;
    assign bid = q_bid[b_head];
    assign bresp = q_bresp[b_head];
    wire b_fire = bvalid && bready;
    integer i;

    always @(posedge clk) begin
        if (rst) begin
            aw_count <= 0; aw_head <= 0; aw_tail <= 0; w_beat <= 0; w_resp <= 0;
            b_count <= 0; b_head <= 0; b_tail <= 0; b_shown <= 0;
        end else begin
            if (aw_fire) begin
                q_awid[aw_tail] <= awid;
                q_awaddr[aw_tail] <= {awaddr[31:SHIFT], {SHIFT{1'b0}}};
                q_awburst[aw_tail] <= awburst;
                aw_tail <= aw_tail + 1;
            end
            if (w_fire) begin
                if (w_beat_resp == 2'd0)
                    for (i = 0; i < BYTES; i = i + 1)
                        if (wstrb[i]) mem[w_addr[ADDR_BITS-1:SHIFT]][8*i +: 8] <= wdata[8*i +: 8];
                if (wlast) begin
                    q_bid[b_tail] <= q_awid[aw_head];
                    q_bresp[b_tail] <= w_burst_resp;
                    b_tail <= b_tail + 1;
                    aw_head <= aw_head + 1;
                    w_beat <= 0;
                    w_resp <= 0;
                end else begin
                    w_beat <= w_beat + 1;
                    w_resp <= w_burst_resp;
                end
            end
            aw_count <= aw_count + aw_fire - (w_fire && wlast);
            // bvalid rises on a `go` cycle and holds until bready; back-to-back responses
            // (one per cycle) when more are queued.
            if (b_fire) begin
                b_head <= b_head + 1;
                b_shown <= (b_count > 1) && go[4];
            end else if (!b_shown && b_count != 0 && go[4]) begin
                b_shown <= 1;
            end
            b_count <= b_count + (w_fire && wlast) - b_fire;
        end
    end
endmodule
