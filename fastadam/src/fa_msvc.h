/* Forced into every module by MSVC builds (/FIfa_msvc.h, see fastadam/_flags.py).

   MSVC has no -ffp-contract=off. Before Visual Studio 2022 (17.0) /fp:precise let it
   contract a*b+c into one FMA instruction under /arch:AVX2 and /arch:AVX512, which rounds
   once instead of twice: the AVX2 and AVX-512 paths would then give other bits than the
   baseline. This pragma turns contraction off for the whole translation unit on every
   version. */
#ifndef FA_MSVC_H
#define FA_MSVC_H
#if defined(_MSC_VER) && !defined(__clang__)
#pragma fp_contract(off)
#endif
#endif
